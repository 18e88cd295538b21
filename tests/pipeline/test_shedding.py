"""`pipeline.shedding`: the caps the supervisor gives decode for live cameras that detect keeps
superseding, and the file that carries them to the decode processes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.shedding import CapsReader, ShedController, write_caps


class Counts:
    """Cumulative per-camera counters as `StatsBoard.cameras` gives them."""

    def __init__(self) -> None:
        self.cams: dict[str, dict[str, Any]] = {}

    def add(self, cam: str, sent: int, superseded: int = 0, shed: int = 0) -> None:
        c = self.cams.setdefault(cam, {"sent": 0, "dropped": {}})
        c["sent"] += sent
        d = c["dropped"]
        d["detect/superseded"] = d.get("detect/superseded", 0) + superseded
        d["decode/shed"] = d.get("decode/shed", 0) + shed


def test_a_camera_detect_keeps_superseding_is_capped_near_what_detect_takes() -> None:
    ctl, n = ShedController(), Counts()
    n.add("a", 0)
    n.add("b", 0)
    assert not ctl.update(n.cams, 0.0)  # the first look only sets the baseline
    n.add("a", 25, superseded=15)  # detect took 10 of 25 frames/s
    n.add("b", 25, superseded=2)  # 8 %: left alone
    assert not ctl.update(n.cams, 0.5)  # within the window: not judged yet
    assert ctl.update(n.cams, 1.0)
    assert ctl.caps == {"a": 12.0}  # 1.2 x the 10 frames/s detect took
    # steady: sends 12, detect takes 10 (17 % superseded): the cap holds
    n.add("a", 12, superseded=2, shed=13)
    assert not ctl.update(n.cams, 2.0) and ctl.caps == {"a": 12.0}
    # detect has room again (under 5 % superseded) while the cap still sheds: it grows 25 %
    n.add("a", 12, superseded=0, shed=13)
    assert ctl.update(n.cams, 3.0) and ctl.caps == {"a": 15.0}
    # the cap no longer sheds anything: gone
    n.add("a", 10, superseded=0, shed=0)
    assert ctl.update(n.cams, 4.0) and ctl.caps == {}


def test_only_live_cameras_are_capped_and_removed_ones_lose_their_cap() -> None:
    ctl, n = ShedController(), Counts()
    n.add("live", 0)
    n.add("file", 0)
    ctl.update(n.cams, 0.0, live=frozenset({"live"}))
    n.add("live", 25, superseded=20)
    n.add("file", 25, superseded=20)
    assert ctl.update(n.cams, 1.0, live=frozenset({"live"}))
    assert set(ctl.caps) == {"live"} and ctl.caps["live"] == 6.0
    assert ctl.update({}, 2.0, live=frozenset())  # the camera was removed
    assert ctl.caps == {}


def test_a_camera_that_stops_sending_loses_its_cap_and_the_floor_holds() -> None:
    ctl, n = ShedController(), Counts()
    n.add("a", 0)
    ctl.update(n.cams, 0.0)
    n.add("a", 20, superseded=20)  # detect took nothing: the floor, not zero
    assert ctl.update(n.cams, 1.0) and ctl.caps == {"a": 0.5}
    n.add("a", 0)  # nothing sent, nothing shed (the camera went away)
    assert ctl.update(n.cams, 2.0) and ctl.caps == {}


def test_the_caps_file_is_read_once_per_change(tmp_path: Path) -> None:
    reader = CapsReader(tmp_path)
    assert reader.poll() is None  # no file yet
    write_caps(tmp_path, {"a": 12.0})
    assert reader.poll() == {"a": 12.0}
    assert reader.poll() is None  # unchanged
    write_caps(tmp_path, {"a": 12.0, "b": 3.5})
    assert reader.poll() == {"a": 12.0, "b": 3.5}
    (tmp_path / "shed-caps.json").unlink()
    assert reader.poll() == {}  # removed: no caps
    assert CapsReader(None).poll() is None  # shedding off


def test_a_low_cap_is_judged_over_a_longer_window_and_grows_back() -> None:
    """A cap of ~1 frame/s sends fewer frames a second than a judgement needs: the window
    widens until it has them, so the cap grows back once detect has room (it used to stay
    stuck: a start-up hiccup left cameras at 0.5-2 frames/s for the whole run)."""
    ctl, n = ShedController(), Counts()
    n.add("a", 0)
    ctl.update(n.cams, 0.0)
    n.add("a", 25, superseded=24)  # a hiccup: detect took 1 of 25
    assert ctl.update(n.cams, 1.0) and ctl.caps == {"a": 1.2}
    t, caps = 1.0, [1.2]
    while "a" in ctl.caps and t < 60:
        t += 1.0
        cap = ctl.caps["a"]
        n.add("a", round(cap), superseded=0, shed=25 - round(cap))  # all taken: room again
        if ctl.update(n.cams, t) and "a" in ctl.caps:
            caps.append(ctl.caps["a"])
    assert caps[:3] == [1.2, 2.2, 3.2]  # +1 frame/s while 25 % is less than that
    assert caps == sorted(caps) and caps[-1] >= 20 and t < 25, (caps, t)
