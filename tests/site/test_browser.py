"""The site in a real headless Chromium, served as ``make run`` serves it (``manage.py serve``).

Needs Debian's ``chromium`` and ``chromium-driver`` packages (``make browser``)
and the ``selenium`` package; skipped with the reason when one is missing.
The server is the session's ``served`` (tests/site/conftest.py): real
gunicorn and a real worker, static files as ``make run`` serves them.
"""

from __future__ import annotations

import shutil
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.site.conftest import Served

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
OPERATOR_PASSWORD = "Operat0r-Passw0rd!"
WAIT_SECONDS = 20
# The admin header's background in the light theme: base.css's --header-bg
# (--secondary, #417690). Without the stylesheet it is transparent.
ADMIN_HEADER_BACKGROUND = "rgb(65, 118, 144)"

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
    pytest.skip(
        "Debian's chromium and chromium-driver are not installed (make browser)",
        allow_module_level=True,
    )

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

pytestmark = pytest.mark.served


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


def assert_page_assets_load(driver: Any) -> None:
    """Every stylesheet and script the page links answers 200, and every stylesheet applied."""
    urls = driver.execute_script(
        "return [...document.querySelectorAll('link[rel=stylesheet]')].map(e => e.href)"
        ".concat([...document.querySelectorAll('script[src]')].map(e => e.src))"
    )
    assert urls
    for url in urls:
        with urllib.request.urlopen(url, timeout=WAIT_SECONDS) as response:
            assert response.status == 200, url
    # A stylesheet that failed to load has no rules the page could use.
    empty = driver.execute_script(
        "return [...document.styleSheets].filter(s => s.href && s.cssRules.length === 0).map(s => s.href)"
    )
    assert empty == []


def test_api_docs_list_the_operations(served: Served, browser: Any) -> None:
    browser.get(f"{served.url}/api/v1/docs")
    # Swagger UI renders one block per operation once it has fetched /api/v1/schema.
    wait_for(browser, '.opblock-get [data-path="/api/v1/health"]')
    wait_for(browser, '.opblock-post [data-path="/api/v1/transcribe"]')
    assert len(browser.find_elements(By.CSS_SELECTOR, ".opblock")) >= 20
    assert browser.execute_script("return typeof SwaggerUIBundle") == "function"
    assert_page_assets_load(browser)


def test_admin_pages_are_styled(served: Served, browser: Any) -> None:
    browser.get(f"{served.url}/admin/login/?next=/admin/")
    header = wait_for(browser, "#header")
    background = browser.execute_script("return getComputedStyle(arguments[0]).backgroundColor", header)
    assert background == ADMIN_HEADER_BACKGROUND
    assert_page_assets_load(browser)


def test_operator_changes_a_balance_and_the_api_shows_it(served: Served, browser: Any) -> None:
    created = served.manage(
        "createsuperuser", "--noinput", "--username", "operator", DJANGO_SUPERUSER_PASSWORD=OPERATOR_PASSWORD
    )
    assert created.returncode == 0, created.stderr
    _, api_key = served.register("alice")
    assert served.me(api_key)["token_balance"] == 1000

    browser.get(f"{served.url}/admin/login/?next=/admin/")
    browser.find_element(By.NAME, "username").send_keys("operator")
    browser.find_element(By.NAME, "password").send_keys(OPERATOR_PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    # The login page has the site header too: wait for what only a logged-in page has.
    wait_for(browser, "#logout-form")
    assert_page_assets_load(browser)

    browser.get(f"{served.url}/admin/accounts/user/?q=alice")
    wait_for(browser, "#result_list").find_element(By.LINK_TEXT, "alice").click()
    statistics = wait_for(browser, "table.user-statistics")
    assert "Active sessions" in statistics.text
    balance = browser.find_element(By.NAME, "token_balance")
    balance.clear()
    balance.send_keys("4321")
    browser.find_element(By.NAME, "_save").click()
    message = wait_for(browser, "ul.messagelist li.success")
    assert "was changed successfully" in message.text

    assert served.me(api_key)["token_balance"] == 4321
