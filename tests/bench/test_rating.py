"""Human rating: hand-checked aggregation, store rules, and a 3-rater session in Chromium."""

from __future__ import annotations

import socket
import threading
import time

import numpy as np
import pytest

from lpm.bench.browser import browser_available
from lpm.bench.rating import RATING_DIMENSIONS, Pair, RatingStore, aggregate_ratings, majority
from lpm.media import write_mp4


def _r(pair, rater, overall, likert_a=3, likert_b=3):
    gsb = dict.fromkeys(RATING_DIMENSIONS, "same")
    gsb["overall"] = overall
    return {
        "pair": pair,
        "case_id": f"c{pair}",
        "system_a": "A",
        "system_b": "B",
        "rater": rater,
        "gsb": gsb,
        "likert_a": likert_a,
        "likert_b": likert_b,
    }


def test_majority_rules():
    assert majority(["good", "good", "bad"]) == "good"
    assert majority(["bad", "same", "bad"]) == "bad"
    assert majority(["good", "same", "bad"]) == "same"  # three-way tie


def test_aggregation_matches_hand_computed_example():
    # pair 1: G,G,B -> G ; pair 2: S,B,B -> B ; pair 3: G,S,B -> S ; pair 4: G,G,G -> G
    votes = {
        1: ("good", "good", "bad"),
        2: ("same", "bad", "bad"),
        3: ("good", "same", "bad"),
        4: ("good", "good", "good"),
    }
    likert_a = {1: (4, 5, 3), 2: (2, 2, 3), 3: (3, 3, 3), 4: (5, 5, 5)}
    ratings = [_r(p, f"r{k}", v[k], likert_a[p][k], 3) for p, v in votes.items() for k in range(3)]
    agg = aggregate_ratings(ratings, n_boot=2000, seed=0)["pairs"][0]
    g = agg["gsb"]["overall"]
    assert (g["good"], g["same"], g["bad"]) == (0.5, 0.25, 0.25)
    assert g["net"] == pytest.approx(0.25)
    # Likert of A: per-pair means 4, 7/3, 3, 5 -> mean 43/12
    assert agg["likert"]["a"]["mean"] == pytest.approx(43 / 12)
    lo, hi = g["good_ci"]
    assert 0.0 <= lo <= 0.5 <= hi <= 1.0
    assert agg["n_pairs"] == 4 and agg["raters_per_pair"] == 3
    assert agg["gsb"]["motion"]["same"] == 1.0


def _videos(tmp_path, n):
    pairs = []
    for i in range(n):
        paths = []
        for s, shade in (("A", 60), ("B", 200)):
            p = tmp_path / s / f"case{i}.mp4"
            write_mp4(p, np.full((6, 32, 32, 3), shade + i, np.uint8), 24)
            paths.append(str(p))
        pairs.append(
            Pair(
                case_id=f"case{i}",
                system_a="A",
                system_b="B",
                video_a=paths[0],
                video_b=paths[1],
                prompt=f"case {i}",
            )
        )
    return pairs


def test_store_assigns_three_raters_and_exports_from_a(tmp_path):
    store = RatingStore(tmp_path / "db.sqlite", seed=1)
    assert store.add_pairs(_videos(tmp_path, 2)) == 2
    assert store.add_pairs(_videos(tmp_path, 2)) == 0  # idempotent
    tokens = [store.session(n) for n in ("ann", "bob", "cy", "dee")]
    assert store.session("ann") == tokens[0]  # resumed
    assert [store.progress(t)[1] for t in tokens] == [2, 2, 2, 0]  # 3 raters per pair
    nxt = store.next_assignment(tokens[0])
    shown_left = store.video_path(nxt["id"], "left")
    choices = dict.fromkeys(RATING_DIMENSIONS, "left")
    store.rate(tokens[0], nxt["id"], choices, 5, 1)
    row = store.export()[0]
    a_was_left = "/A/" in str(shown_left)
    assert row["gsb"]["overall"] == ("good" if a_was_left else "bad")
    assert row["likert_a"] == (5 if a_was_left else 1)
    with pytest.raises(ValueError, match="Likert"):
        store.rate(tokens[0], nxt["id"], choices, 6, 1)
    with pytest.raises(KeyError):
        store.rate(tokens[1], nxt["id"], choices, 3, 3)
    store.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.skipif(not browser_available(), reason="needs selenium + chromium + chromedriver")
def test_three_raters_click_through_in_chromium(tmp_path):
    import uvicorn
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    from lpm.bench.browser import chromium
    from lpm.bench.rating.app import create_app

    store = RatingStore(tmp_path / "db.sqlite", seed=3)
    store.add_pairs(_videos(tmp_path, 3))
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(store), host="127.0.0.1", port=port, log_level="error")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    # raters 0 and 1 always prefer system A on every dimension, rater 2 says Same
    try:
        with chromium(1000, 900) as driver:
            for k, name in enumerate(("rater-0", "rater-1", "rater-2")):
                driver.get(f"http://127.0.0.1:{port}/")
                driver.find_element(By.ID, "name").send_keys(name)
                driver.find_element(By.ID, "start").click()
                wait = WebDriverWait(driver, 10)
                for _ in range(3):
                    wait.until(ec.visibility_of_element_located((By.ID, "submit")))
                    wait.until(
                        lambda d: d.find_element(By.ID, "rating").get_attribute("data-assignment")
                    )
                    aid = driver.find_element(By.ID, "rating").get_attribute("data-assignment")
                    a_left = "/A/" in str(store.video_path(aid, "left"))
                    choice = "same" if k == 2 else ("left" if a_left else "right")
                    for d in RATING_DIMENSIONS:
                        driver.find_element(By.ID, f"{d}-{choice}").click()
                    driver.find_element(By.ID, f"likert-left-{4 if a_left else 2}").click()
                    driver.find_element(By.ID, f"likert-right-{2 if a_left else 4}").click()
                    driver.find_element(By.ID, "submit").click()
                    wait.until(
                        lambda d, a=aid: (
                            d.find_element(By.ID, "rating").get_attribute("data-assignment") != a
                            or d.find_element(By.ID, "done").is_displayed()
                        )
                    )
                wait.until(ec.visibility_of_element_located((By.ID, "done")))
            driver.get(f"http://127.0.0.1:{port}/api/export")
            assert "aggregate" in driver.page_source
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    ratings = store.export()
    assert len(ratings) == 9
    agg = aggregate_ratings(ratings)["pairs"][0]
    assert agg["raters_per_pair"] == 3
    assert agg["gsb"]["overall"]["good"] == 1.0  # 2 of 3 raters prefer A on every pair
    assert agg["likert"]["a"]["mean"] == pytest.approx(4.0)
    store.close()
