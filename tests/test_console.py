"""The web console: its static files as served, and the page driven in a real headless
Chromium (Debian's ``chromium`` + ``chromium-driver``; ``.ci/run`` installs them) against a
real router with real traffic. The browser test saves a screenshot when it fails, and one
at 1280×800 and one at phone width (375 px) when it passes, in its tmp dir."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import ADMIN_KEY

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
PROMPT = "Write a haiku about routers"
WAIT_S = 20  # generous: each wait returns as soon as its condition holds


def test_console_files_are_served_with_nothing_external(make_router):
    router = make_router()
    with httpx.Client(base_url=router.root) as http:
        redirect = http.get("/console")
        assert redirect.status_code == 307 and redirect.headers["location"] == "/console/"
        page = http.get("/console/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        csp = page.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
        refs = re.findall(r'(?:src|href)="([^"#]+)"', page.text)
        assert refs, "the page links its scripts and styles"
        for ref in refs:
            if ref.startswith("data:"):
                continue
            assert "://" not in ref and not ref.startswith("//"), f"{ref} is fetched from elsewhere"
            assert http.get("/console/" + ref).status_code == 200, ref
        licence = http.get("/console/vendor/uplot/LICENSE")
        assert licence.status_code == 200 and "MIT License" in licence.text
        # The page is public, the data is not.
        assert http.get("/v1/admin/teams").status_code == 401


# ---------------------------------------------------------------- the real browser


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    if not CHROMIUM.exists() or not CHROMEDRIVER.exists():
        pytest.skip(
            "Debian's chromium and chromium-driver are not installed "
            "(apt-get install -y chromium chromium-driver; .ci/run installs them)"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for arg in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,800",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=opts)
    try:
        yield driver
    finally:
        driver.quit()


@contextmanager
def screenshot_on_failure(driver: Any, path: Path) -> Iterator[None]:
    try:
        yield
    except BaseException:
        driver.save_screenshot(str(path))
        print(f"console test failed; screenshot: {path}")
        raise


def wait_for(driver: Any, condition: Any, what: str) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT_S).until(lambda d: condition(d), message=what)


def shown_usd(text: str) -> float:
    return float(text.strip().lstrip("$"))


def test_console_in_a_real_browser(make_router, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    router = make_router()
    # Traffic before sign-in, so a team has spend to show.
    router.openai().chat.completions.create(
        model="p2l", messages=[{"role": "user", "content": "Say hello"}]
    )
    d = browser
    css = By.CSS_SELECTOR
    with screenshot_on_failure(d, tmp_path / "console-failure.png"):
        d.get(router.root + "/console")
        key = wait_for(d, lambda d: d.find_element(By.ID, "key"), "the sign-in form")
        assert key.accessible_name == "API key"
        key.send_keys(ADMIN_KEY, Keys.ENTER)  # the keyboard alone signs in

        # Each team's spend, as the admin API states it.
        with httpx.Client(
            base_url=router.root, headers={"authorization": f"Bearer {ADMIN_KEY}"}
        ) as h:
            teams = {t["team"]: t for t in h.get("/v1/admin/teams").json()["data"]}
        assert teams["research"]["spent_usd"] > 0
        for name, team in teams.items():
            card = wait_for(
                d, lambda d, n=name: d.find_element(css, f'article[data-team="{n}"]'), name
            )
            spent = shown_usd(card.find_element(css, ".team-spent").text)
            assert spent == pytest.approx(team["spent_usd"], rel=0.01, abs=1e-9), name

        # A decision made now appears in the live table.
        raw = router.openai().chat.completions.with_raw_response.create(
            model="p2l", messages=[{"role": "user", "content": PROMPT}]
        )
        decision_id = raw.headers["x-router-decision-id"]
        chosen = raw.headers["x-router-model"]
        row = f'#decision-table tr[data-decision-id="{decision_id}"]'
        wait_for(d, lambda d: d.find_elements(css, row), "the new decision in the table")
        # Open it from the keyboard: the row's button takes focus and Enter.
        button = d.find_element(css, row + " button")
        assert button.accessible_name.startswith(f"Open decision {decision_id}")
        button.send_keys(Keys.ENTER)
        dialog = wait_for(
            d,
            lambda d: d.find_element(css, "#decision-dialog[open]"),
            "the decision dialog",
        )
        wait_for(d, lambda d: d.find_elements(css, "#dd-body table.candidates tbody tr"), "rows")
        body = dialog.text
        assert decision_id in body and chosen in body and "Candidates" in body
        assert f"{chosen} (chosen)" in body or chosen in body
        d.find_element(By.ID, "dd-close").click()
        wait_for(d, lambda d: not d.find_elements(css, "#decision-dialog[open]"), "closed")

        # Found by the id a client holds (the x-router-decision-id header), typed in.
        find = d.find_element(By.ID, "f-decision")
        assert "x-router-decision-id" in find.accessible_name
        find.send_keys(decision_id, Keys.ENTER)
        wait_for(d, lambda d: d.find_element(css, "#decision-dialog[open]"), "the dialog by id")
        wait_for(d, lambda d: "Session" in d.find_element(By.ID, "dd-body").text, "its session")
        assert decision_id in d.find_element(By.ID, "dd-title").text
        d.find_element(By.ID, "dd-close").click()
        wait_for(d, lambda d: not d.find_elements(css, "#decision-dialog[open]"), "closed")

        # A typed prompt: the leaderboard and each team's pick.
        d.find_element(By.ID, "prompt").send_keys(PROMPT)
        d.find_element(By.ID, "preview-button").click()
        wait_for(d, lambda d: d.find_elements(css, "#board-table tbody tr"), "the leaderboard")
        board = router.http().post(
            "/v1/leaderboard", json={"messages": [{"role": "user", "content": PROMPT}]}
        )
        rows = d.find_elements(css, "#board-table tbody tr")
        assert len(rows) == len(board.json()["models"])
        assert board.json()["models"][0]["model"] in rows[0].text
        picks = {
            r.get_attribute("data-team") for r in d.find_elements(css, "#picks-table tr[data-team]")
        }
        assert picks == set(teams)

        wide = tmp_path / "console-1280x800.png"
        d.execute_script("window.scrollTo(0, 0)")
        d.save_screenshot(str(wide))

        # Phone width: the key stays in the tab's session, nothing overflows sideways.
        d.set_window_size(375, 812)
        d.refresh()
        wait_for(d, lambda d: d.find_elements(css, 'article[data-team="research"]'), "signed in")
        overflow = d.execute_script(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, f"the page is {overflow}px wider than a phone"
        phone = tmp_path / "console-375.png"
        d.save_screenshot(str(phone))

        errors = [e for e in d.get_log("browser") if e["level"] == "SEVERE"]
        assert not errors, errors
    print(f"screenshots: {wide} {phone}")
