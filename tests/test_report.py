"""The HTML report: one offline file, checked as text and in a real (headless) browser.

The browser tests drive Debian's chromium through selenium and chromedriver; they skip, saying
so, where chromium, chromedriver or selenium is missing (`.ci/run` installs them).
"""

from __future__ import annotations

import html.parser
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import Add, Boom, CounterState, Multiply

import dagger as dg
from dagger import render

pytest.importorskip("jinja2")
pytest.importorskip("matplotlib")

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CHROMIUM = "/usr/bin/chromium"
# Markup in a tag: must show as text, never run.
HOSTILE_TAG = '<img src=x onerror="window.pwned=1"></script><script>window.pwned=2</script>'


def measure(state):
    return {"value": state.value, "ratio": state.value / 3}


def gone_wrong(state):
    raise KeyError("no such metric")


@pytest.fixture
def stored(exp_dir):
    """root -> a(+1) [measure] -> {b(*3) [prune], c(*5) [prune, big]};
    root -> d(+10) [baseline, gone_wrong] -> e(Boom) [baseline, hostile], which fails."""
    exp = dg.Experiment(exp_dir, CounterState)
    root = exp.spawn_new_tree(start=1)
    a = dg.Function(measure)(Add(1)(root))
    with exp.tag("prune"):
        b = dg.Function(measure)(Multiply(3)(a))
        with exp.tag("big"):
            c = dg.Function(measure)(Multiply(5)(a))
    with exp.tag("baseline"):
        d = dg.Function(gone_wrong)(Add(10)(root))
        with exp.tag(HOSTILE_TAG):
            e = Boom()(d)
    with pytest.raises(dg.RunError):
        exp.run(progress=False)
    return {name: p.sha() for name, p in dict(root=root, a=a, b=b, c=c, d=d, e=e).items()}


@pytest.fixture
def tree(exp_dir, stored):
    return dg.Experiment.restore(exp_dir).graph


@pytest.fixture
def report(tree, tmp_path):
    return tree.report(tmp_path / "report" / "index.html", color="result.measure.value")


class Page(html.parser.HTMLParser):
    """What a report loads and runs: every tag with its attributes, and script contents."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.scripts: list[tuple[dict[str, str | None], str]] = []
        self._script: dict[str, str | None] | None = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag == "script":
            self._script = dict(attrs)

    def handle_data(self, data):
        if self._script is not None:
            self.scripts.append((self._script, data))

    def handle_endtag(self, tag):
        if tag == "script":
            self._script = None


def page_data(path: Path) -> dict:
    page = Page(path.read_text(encoding="utf-8"))
    [text] = [text for attrs, text in page.scripts if attrs.get("id") == "dagger-data"]
    return json.loads(text)


# -- the file --------------------------------------------------------------------------------------


def test_the_report_is_one_file_that_loads_nothing(report, tree):
    text = report.read_text(encoding="utf-8")
    page = Page(text)
    fetched = [
        (tag, name, value)
        for tag, attributes in page.tags
        for name, value in attributes.items()
        if name in ("src", "href", "xlink:href", "srcset", "action", "data") and value
    ]
    assert fetched, "the plots are images"
    for tag, name, value in fetched:
        assert value.startswith(("data:image/svg+xml;base64,", "#")), (tag, name, value)
    assert not [tag for tag, _ in page.tags if tag in ("link", "iframe", "object", "embed")]
    assert all("src" not in attrs for attrs, _ in page.scripts)
    assert "@import" not in text and "url(http" not in text
    # The script and its data are in the file: one state per state of the tree.
    data = page_data(report)
    assert sorted(state["id"] for state in data["states"]) == sorted(tree.node_map)
    assert len(data["rows"]) == len(tree)


@pytest.mark.requires_dot
def test_the_report_has_the_drawing_the_table_and_the_plots(report, tree, stored):
    text = report.read_text(encoding="utf-8")
    for sha in stored.values():
        assert f'id="state&#45;{sha}"' in text or f'id="state-{sha}"' in text
    data = page_data(report)
    assert data["columns"][:3] == ["id", "recipe", "param.amount"]
    assert "result.measure.value" in data["columns"]
    failed = next(state for state in data["states"] if state["id"] == stored["e"])
    assert (
        failed["error"]["type"] == "ValueError" and "boom on purpose" in failed["error"]["message"]
    )
    assert "Traceback" in failed["error"]["traceback"]
    assert failed["step"] == "Boom(fail=True)"
    d = next(state for state in data["states"] if state["id"] == stored["d"])
    assert d["function_errors"]["gone_wrong"]["type"] == "KeyError"
    assert "coloured by result.measure.value" in text
    images = [attrs for tag, attrs in Page(text).tags if tag == "img"]
    assert len(images) == 2  # the default plots: each numeric result against the parameter
    assert "result.measure.value by param.factor" in text


def test_markup_in_a_tag_stays_text(report, stored):
    text = report.read_text(encoding="utf-8")
    assert "<img src=x" not in text
    assert "<script>window.pwned" not in text
    data = page_data(report)
    e = next(state for state in data["states"] if state["id"] == stored["e"])
    assert HOSTILE_TAG in e["tags"]  # the data keep it as written, for textContent


def test_plots_named_by_the_caller(tree, tmp_path):
    import matplotlib.figure

    own = matplotlib.figure.Figure()
    own.add_subplot().set_title("my own figure")
    path = tree.report(
        tmp_path / "report.html",
        title="Pruning <study>",
        plots=[{"x": "param.factor", "y": "result.measure.ratio", "kind": "scatter"}, own],
    )
    text = path.read_text(encoding="utf-8")
    assert "<title>Pruning &lt;study&gt;</title>" in text
    captions = [c for c in text.split("<figcaption>")[1:]]
    assert [c.split("</figcaption>")[0] for c in captions] == [
        "result.measure.ratio by param.factor",
        "my own figure",
    ]
    with pytest.raises(dg.ColumnNotFoundError, match="did you mean 'result.measure.ratio'"):
        tree.report(
            tmp_path / "bad.html", plots=[{"x": "param.factor", "y": "result.measure.rato"}]
        )
    assert not (tmp_path / "bad.html").exists()
    assert tree.report(tmp_path / "none.html", plots=[]).read_text().count("<img") == 0


# -- the command line ------------------------------------------------------------------------------


def dagger_cli(*args, env, cwd):
    return subprocess.run(
        [sys.executable, "-m", "dagger", *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_cli_report(exp_dir, stored, subprocess_env, tmp_path):
    out = tmp_path / "out" / "report.html"
    process = dagger_cli(
        "report", exp_dir, "-o", out, "--color", "result.measure.value",
        "--plot", "param.factor,result.measure.value", "--plot", "depth,result.measure.ratio,recipe",
        env=subprocess_env, cwd=tmp_path,
    )  # fmt: skip
    assert process.returncode == 0, process.stderr
    assert process.stdout.strip() == str(out)
    text = out.read_text(encoding="utf-8")
    assert f"<title>dagger experiment {exp_dir.name}</title>" in text
    assert text.count("<figure>") == 2

    process = dagger_cli("report", exp_dir, "--plot", "only-x", env=subprocess_env, cwd=tmp_path)
    assert process.returncode == 2 and "expected X,Y or X,Y,HUE" in process.stderr
    process = dagger_cli(
        "report", exp_dir, "--color", "result.mesure.value", env=subprocess_env, cwd=tmp_path
    )
    assert process.returncode == 2
    assert process.stderr.startswith("dagger report: No column named 'result.mesure.value'")
    assert not (tmp_path / "report.html").exists()


def test_without_dot_the_report_shows_the_tree_as_text(exp_dir, stored, subprocess_env, tmp_path):
    no_dot = tmp_path / "bin"  # a PATH without Graphviz's `dot`
    no_dot.mkdir()
    out = tmp_path / "report.html"
    process = dagger_cli(
        "report", exp_dir, "-o", out, env={**subprocess_env, "PATH": str(no_dot)}, cwd=tmp_path
    )
    assert process.returncode == 0, process.stderr
    text = out.read_text(encoding="utf-8")
    assert "No drawing: Drawing the tree needs Graphviz&#39;s `dot` program" in text
    assert "apt-get install graphviz" in text
    assert '<pre class="text-tree">' in text and f"Multiply(factor=5)  {stored['c'][:12]}" in text
    assert "<svg" not in text.split('id="plots-section"')[0]
    assert text.count("<figure>") == 2  # plots need no Graphviz
    assert len(page_data(out)["rows"]) == 6


# -- 2,000 states ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def large(tmp_path_factory):
    """40 x Add under the root, 49 x Multiply under each (2,001 states), and the report."""
    directory = tmp_path_factory.mktemp("large")
    exp = dg.Experiment(directory / "exp", CounterState, durability="fast")
    root = exp.spawn_new_tree(start=1)
    for amount in range(40):
        child = Add(amount)(root)
        for factor in range(49):
            dg.Function(measure)(Multiply(factor)(child))
    exp.run(progress=False)
    tree = dg.Experiment.restore(directory / "exp").graph
    started = time.perf_counter()
    path = tree.report(directory / "report.html", color="result.measure.value")
    print(
        f"report of {len(tree)} states: {time.perf_counter() - started:.1f} s, {path.stat().st_size / 1e6:.2f} MB"
    )
    return tree, path


def test_a_report_of_2000_states_is_folded_and_paginated(large):
    tree, path = large
    assert len(tree) == 2001
    data = page_data(path)
    assert len(data["rows"]) == 2001 and data["page_size"] == 50
    members = sorted(sha for group in data["groups"].values() for sha in group)
    assert len(members) > 1900  # nearly everything is folded
    if shutil.which("dot") is not None:
        text = path.read_text(encoding="utf-8")
        drawn = text.count('class="node state') + text.count('class="node group')
        assert drawn <= render.MAX_DRAWN_NODES
        assert drawn + len(members) - len(data["groups"]) == 2001  # every state, once


# -- in a browser ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """Headless Debian chromium driven by selenium through chromedriver, offline."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"Debian's chromium is not installed at {CHROMIUM} (apt-get install chromium)")
    driver_path = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    if not os.access(driver_path, os.X_OK):
        pytest.skip("chromedriver is not installed (apt-get install chromium-driver)")
    webdriver = pytest.importorskip(
        "selenium.webdriver", reason="selenium is not installed (pip install selenium)"
    )
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tmp_path_factory.mktemp("chromium-profile")
    for flag in (
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={profile}", "--window-size=1400,1000",
    ):  # fmt: skip
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # An explicit driver path: selenium then never tries to download one.
    driver = webdriver.Chrome(options=options, service=Service(driver_path))
    driver.implicitly_wait(0)
    yield driver
    driver.quit()


def open_report(browser, path: Path):
    browser.get(path.resolve().as_uri())
    errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert errors == [], errors
    assert browser.execute_script("return window.pwned") is None  # the hostile tag did not run


def table_ids(browser) -> list[str]:
    return browser.execute_script(
        "return Array.from(document.querySelectorAll('#states tbody tr')).map(r => r.dataset.id)"
    )


def column_values(browser, column: str) -> list[str]:
    return browser.execute_script(
        "return Array.from(document.querySelectorAll("
        "`#states tbody td[data-column='${arguments[0]}']`)).map(td => td.textContent)",
        column,
    )


def set_filter(browser, text: str) -> None:
    """Types into the filter box as a user does (clear() alone fires no input event)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    box = browser.find_element(By.ID, "filter")
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(Keys.BACKSPACE)
    if text:
        box.send_keys(text)


def test_in_a_browser_every_state_is_there_and_clicking_shows_it(
    browser, report, tree, stored, tmp_path
):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    open_report(browser, report)
    assert browser.title == "dagger experiment"
    Select(browser.find_element(By.ID, "page-size")).select_by_visible_text("all")
    assert sorted(table_ids(browser)) == sorted(tree.node_map)
    if shutil.which("dot") is not None:
        for sha in stored.values():
            assert browser.find_element(By.ID, f"state-{sha}").is_displayed()

        browser.find_element(By.ID, f"state-{stored['c']}").click()
        details = browser.find_element(By.ID, "details")
        assert details.get_attribute("data-id") == stored["c"]
        text = details.text
        assert text.startswith("Multiply(factor=5)")
        for expected in (
            "done",
            "prune, big",
            "factor",
            "measure",
            "LINEAGE",
            "root(start=1)",
            "Add(amount=1)",
        ):
            assert expected in text, expected
        assert (
            browser.find_element(By.ID, f"state-{stored['c']}")
            .get_attribute("class")
            .endswith("selected")
        )
        browser.save_screenshot(str(tmp_path / "report-clicked.png"))

    # A row click shows the failed state: its error, its failed function, the hostile tag as text.
    set_filter(browser, "Boom")
    assert table_ids(browser) == [stored["e"]]
    browser.find_element(By.CSS_SELECTOR, f"#states tbody tr[data-id='{stored['e']}']").click()
    text = browser.find_element(By.ID, "details").text
    assert "ValueError: boom on purpose" in text and "failed" in text
    assert HOSTILE_TAG in text
    browser.find_element(By.CSS_SELECTOR, "#details details summary").click()
    assert (
        "Traceback (most recent call last)"
        in browser.find_element(By.CSS_SELECTOR, "#details pre").text
    )
    # The lineage links lead to the ancestors.
    browser.find_element(
        By.XPATH, "//ol[@class='lineage']//button[text()='Add(amount=10)']"
    ).click()
    text = browser.find_element(By.ID, "details").text
    assert text.startswith("Add(amount=10)") and "gone_wrong: KeyError" in text
    assert browser.execute_script("return window.pwned") is None

    screenshot = tmp_path / "report.png"
    assert browser.save_screenshot(str(screenshot))
    width, height = browser.execute_script("return [window.innerWidth, window.innerHeight]")
    data = screenshot.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert (int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")) == (
        width,
        height,
    )


def test_in_a_browser_sorting_orders_and_filtering_narrows(browser, report, tree, stored):
    from selenium.webdriver.common.by import By

    open_report(browser, report)
    header = browser.find_element(By.CSS_SELECTOR, "th[data-column='result.measure.value'] button")
    header.click()
    values = column_values(browser, "result.measure.value")
    numbers = [float(v) for v in values if v]
    assert numbers == sorted(numbers) == [2, 6, 10]
    assert values[len(numbers) :] == [""] * (len(values) - len(numbers))  # missing last
    assert (
        browser.find_element(
            By.CSS_SELECTOR, "th[data-column='result.measure.value']"
        ).get_attribute("aria-sort")
        == "ascending"
    )
    header = browser.find_element(By.CSS_SELECTOR, "th[data-column='result.measure.value'] button")
    header.click()
    values = column_values(browser, "result.measure.value")
    assert [float(v) for v in values if v] == [10, 6, 2]
    assert values[3:] == ["", "", ""]  # missing still last

    browser.find_element(By.CSS_SELECTOR, "th[data-column='recipe'] button").click()
    assert column_values(browser, "recipe") == [
        "Add",
        "Add",
        "Boom",
        "Multiply",
        "Multiply",
        "root",
    ]

    set_filter(browser, "multiply")
    assert sorted(table_ids(browser)) == sorted([stored["b"], stored["c"]])
    assert browser.find_element(By.ID, "count").text == "2 of 6 states"
    set_filter(browser, "multiply big")  # every word must appear
    assert table_ids(browser) == [stored["c"]]
    set_filter(browser, "no such thing")
    assert table_ids(browser) == []
    assert browser.find_element(By.ID, "page-info").text == "no state matches"
    set_filter(browser, "")
    assert len(table_ids(browser)) == 6


def test_in_a_browser_2000_states_stay_usable(browser, large, tmp_path):
    from selenium.webdriver.common.by import By

    tree, path = large
    started = time.perf_counter()
    open_report(browser, path)
    print(f"opened a report of {len(tree)} states in {time.perf_counter() - started:.2f} s")
    assert len(table_ids(browser)) == 50
    assert browser.find_element(By.ID, "count").text == "2001 states"
    assert browser.find_element(By.ID, "page-info").text == "rows 1\u201350, page 1 of 41"
    browser.find_element(By.ID, "next").click()
    assert browser.find_element(By.ID, "page-info").text == "rows 51\u2013100, page 2 of 41"
    set_filter(browser, "Multiply")
    assert browser.find_element(By.ID, "count").text == "1960 of 2001 states"
    assert browser.find_element(By.ID, "page-info").text == "rows 1\u201350, page 1 of 40"
    set_filter(browser, "")
    if shutil.which("dot") is None:
        return
    groups = browser.find_elements(By.CSS_SELECTOR, "#drawing g.node.group")
    assert groups
    folded = page_data(path)["groups"]
    biggest = max(groups, key=lambda group: len(folded[group.get_attribute("id")]))
    members = folded[biggest.get_attribute("id")]
    biggest.click()
    details = browser.find_element(By.ID, "details").text
    assert details.startswith(f"{len(members)} \u00d7 ")
    browser.find_element(By.ID, "show-group").click()
    assert browser.find_element(By.ID, "count").text == f"{len(members)} of 2001 states"
    assert set(table_ids(browser)) <= set(members)
    browser.find_element(By.ID, "clear-group").click()
    assert browser.find_element(By.ID, "count").text == "2001 states"
    browser.save_screenshot(str(tmp_path / "large.png"))
