"""The rating web app (FastAPI): anonymised side-by-side pairs, Good/Same/Bad and Likert.

Routes: `GET /` the page; `POST /api/session {name}` starts or resumes a rater's session;
`GET /api/next?rater=T` the next pair (an opaque assignment id, never system names);
`GET /video/{assignment}/{left|right}` the videos; `POST /api/rate` stores a rating;
`GET /api/export` every rating plus the aggregate. `serve` binds 127.0.0.1 only.
"""

from pathlib import Path

from lpm.bench.rating.aggregate import aggregate_ratings
from lpm.bench.rating.store import (
    CHOICES,
    DIMENSION_LABELS,
    RATING_DIMENSIONS,
    RatingStore,
)

PAGE = Path(__file__).with_name("page.html")
HOST = "127.0.0.1"
"""The app only ever listens on the loopback interface."""


def create_app(store: RatingStore):
    """The FastAPI application over one study database."""
    try:
        from fastapi import FastAPI, HTTPException
        from fastapi.responses import FileResponse, HTMLResponse
        from pydantic import BaseModel
    except ImportError as err:
        raise ImportError(
            "the rating app needs fastapi and uvicorn: pip install 'lpm[bench]'"
        ) from err

    app = FastAPI(title="LPM-Bench rating", docs_url=None, redoc_url=None)

    class SessionIn(BaseModel):
        name: str

    class RateIn(BaseModel):
        rater: str
        assignment: str
        choices: dict[str, str]
        likert_left: int
        likert_right: int

    def _rater(token: str) -> str:
        if not store.rater_exists(token):
            raise HTTPException(404, "unknown rater; start a session with your name")
        return token

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        return PAGE.read_text()

    @app.get("/api/config")
    def config() -> dict:
        return {
            "dimensions": [{"key": d, "label": DIMENSION_LABELS[d]} for d in RATING_DIMENSIONS],
            "choices": list(CHOICES),
        }

    @app.post("/api/session")
    def session(body: SessionIn) -> dict:
        try:
            token = store.session(body.name)
        except ValueError as err:
            raise HTTPException(400, str(err)) from None
        done, total = store.progress(token)
        return {"rater": token, "done": done, "total": total}

    @app.get("/api/next")
    def next_pair(rater: str) -> dict:
        token = _rater(rater)
        done, total = store.progress(token)
        nxt = store.next_assignment(token)
        if nxt is None:
            return {"finished": True, "done": done, "total": total}
        return {
            "finished": False,
            "assignment": nxt["id"],
            "prompt": nxt["prompt"],
            "left": f"/video/{nxt['id']}/left",
            "right": f"/video/{nxt['id']}/right",
            "done": done,
            "total": total,
        }

    @app.get("/video/{assignment}/{side}")
    def video(assignment: str, side: str) -> FileResponse:
        try:
            path = store.video_path(assignment, side)
        except (KeyError, ValueError):
            raise HTTPException(404, "no such video") from None
        return FileResponse(path, media_type="video/mp4")

    @app.post("/api/rate")
    def rate(body: RateIn) -> dict:
        token = _rater(body.rater)
        try:
            store.rate(token, body.assignment, body.choices, body.likert_left, body.likert_right)
        except KeyError:
            raise HTTPException(404, "unknown assignment for this rater") from None
        except ValueError as err:
            raise HTTPException(400, str(err)) from None
        done, total = store.progress(token)
        return {"ok": True, "done": done, "total": total}

    @app.get("/api/export")
    def export() -> dict:
        ratings = store.export()
        return {"ratings": ratings, "aggregate": aggregate_ratings(ratings)}

    return app


def serve(store: RatingStore, port: int = 8765, log_level: str = "warning") -> None:
    """Serve the app on 127.0.0.1:`port` until interrupted."""
    import uvicorn

    uvicorn.run(create_app(store), host=HOST, port=port, log_level=log_level)


def make_pairs(run_dir: Path, system_a: str, system_b: str) -> list:
    """Pairs of a run directory: every case both systems have a video of (ground truth
    included as `ground-truth`)."""
    import json

    from lpm.bench.rating.store import Pair
    from lpm.bench.runner import TRUTH_SYSTEM

    run_dir = Path(run_dir)
    run = (
        json.loads((run_dir / "run.json").read_text())
        if (run_dir / "run.json").is_file()
        else {"systems": {}}
    )

    def video(system: str, case: str) -> Path:
        if system == TRUTH_SYSTEM:
            return run_dir / "cases" / case / "inputs" / "truth.mp4"
        videos = run["systems"].get(system, {}).get("videos")
        base = (
            Path(videos) if videos and videos != "None" else run_dir / "systems" / system / "videos"
        )
        return base / f"{case}.mp4"

    pairs = []
    for case_dir in sorted((run_dir / "cases").glob("*")):
        va, vb = video(system_a, case_dir.name), video(system_b, case_dir.name)
        if va.is_file() and vb.is_file():
            prompt = _prompt(case_dir)
            pairs.append(
                Pair(
                    case_id=case_dir.name,
                    system_a=system_a,
                    system_b=system_b,
                    video_a=str(va),
                    video_b=str(vb),
                    prompt=prompt,
                )
            )
    if not pairs:
        raise ValueError(f"no case of {run_dir} has videos of both {system_a!r} and {system_b!r}")
    return pairs


def _prompt(case_dir: Path) -> str:
    import json

    f = case_dir / "inputs" / "case.json"
    if not f.is_file():
        return ""
    case = json.loads(f.read_text())
    asks = [
        f"{i['start_s']:.1f}-{i['end_s']:.1f} s: {i['text']}"
        for i in case.get("instructions", [])
        if i.get("action") or i.get("expression")
    ]
    return f"{case['subset']} case, {case['duration_s']:.1f} s. " + " | ".join(asks[:6])
