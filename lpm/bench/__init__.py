"""LPM-Bench: case format, suites, runner, automatic metrics, report and human rating.

- `case`: the versioned case format (`CaseSpec`); `suites`: `stage-1000`, `stage-mini`, user
  suite files; `materialize`: render or read a case's inputs and ground truth.
- `backends`: networks that read frames (Stage probes, real-face landmarks, external nets);
  `nets`: SyncNet, ArcFace (IResNet) and I3D with released-weight loaders; `avsync`: SyncNet
  scoring (face crops, MFCCs, offset search);
  `metrics`: every automatic metric; `scoring`: one video of one case -> `CaseScore`.
- `runner`: `lpm bench run`; `report`: `metrics.json` + `report.html`; `rating`: the rating app.
- `probes`: the Stage probes that back the metrics on Stage suites.
"""
