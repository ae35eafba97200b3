"""The operators' admin site and the API docs in a real headless Chromium.

Needs Debian's ``chromium`` and ``chromium-driver`` packages and the
``selenium`` package; skipped with the reason when one is missing. The flow:
log in at /admin/, give a user 4321 tokens on their change page, and read the
new balance back from the API with that user's key, over real HTTP.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from accounts import services as account_services
from accounts.models import User

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
PASSWORD = "Operat0r-Passw0rd!"
WAIT_SECONDS = 20

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
    pytest.skip(
        "Debian's chromium and chromium-driver are not installed (apt-get install -y chromium chromium-driver)",
        allow_module_level=True,
    )

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


@pytest.fixture
def browser() -> Iterator[Any]:
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless=new",
        # Root in a container has no user namespace for Chromium's sandbox.
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1280,1024",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    # An explicit driver path: Selenium Manager would otherwise try to download one.
    service = webdriver.ChromeService(executable_path=str(CHROMEDRIVER))
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(WAIT_SECONDS)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def wait_for(driver: Any, css: str) -> Any:
    return WebDriverWait(driver, WAIT_SECONDS).until(
        expected_conditions.presence_of_element_located((By.CSS_SELECTOR, css))
    )


def api_get(url: str, api_key: str) -> dict[str, Any]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {api_key}"})
    with urllib.request.urlopen(request, timeout=WAIT_SECONDS) as response:
        return json.loads(response.read())


def test_operator_changes_a_balance_and_the_api_shows_it(live_server: Any, browser: Any) -> None:
    User.objects.create_superuser("operator", PASSWORD)
    alice = User.objects.create_user("alice", "Alice-Passw0rd!")
    _, api_key = account_services.api_key_create(user=alice, name="alice's key")
    assert api_get(f"{live_server.url}/api/v1/user/me", api_key)["token_balance"] == 1000

    browser.get(f"{live_server.url}/admin/login/?next=/admin/")
    browser.find_element(By.NAME, "username").send_keys("operator")
    browser.find_element(By.NAME, "password").send_keys(PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    # The login page has the site header too: wait for what only a logged-in page has.
    wait_for(browser, "#logout-form")
    assert "Log out" in browser.page_source

    browser.get(f"{live_server.url}/admin/accounts/user/{alice.pk}/change/")
    statistics = wait_for(browser, "table.user-statistics")
    assert "Active sessions" in statistics.text
    balance = browser.find_element(By.NAME, "token_balance")
    balance.clear()
    balance.send_keys("4321")
    browser.find_element(By.NAME, "_save").click()
    message = wait_for(browser, "ul.messagelist li.success")
    assert "was changed successfully" in message.text

    assert api_get(f"{live_server.url}/api/v1/user/me", api_key)["token_balance"] == 4321
    alice.refresh_from_db()
    assert alice.token_balance == 4321


def test_api_docs_page_renders_the_schema(live_server: Any, browser: Any) -> None:
    pytest.importorskip("drf_spectacular_sidecar", reason="Swagger UI comes from a CDN without the sidecar package")
    browser.get(f"{live_server.url}/api/v1/docs")
    # Swagger UI renders one block per operation once it has fetched /api/v1/schema.
    WebDriverWait(browser, WAIT_SECONDS).until(
        lambda driver: len(driver.find_elements(By.CSS_SELECTOR, ".opblock")) >= 4
    )
    page = browser.page_source
    assert "/api/v1/admin/users" in page
    assert "/api/v1/user/login" in page
