"""Write synthetic scenes to disk: H.264 videos, MOTChallenge ground truth, and a YOLO-format
detection dataset made of the *decoded* compressed frames (what the pipeline will see).

Dataset label rule (documented in data.yaml too): a label is the object's full sprite box
clipped to the image, kept only when at least ``min_visibility`` (0.15) of the sprite is visible
and the clipped box is at least ``min_box_px`` (6) wide and tall. Riders are ``person``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from stages.synth.scene import CLASS_NAMES, MOT_CLASS, SceneConfig, SynthObject, generate_scene

MIN_VISIBILITY = 0.15
MIN_BOX_PX = 6


def scene_seed(seed: int, index: int) -> int:
    """The seed of video ``index`` in a set generated with ``seed`` (stable, well mixed)."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def video_crf(seed: int) -> int:
    """A per-video x264 CRF in 23..32: some clips clean, some blocky."""
    return 23 + scene_seed(seed, 1_000_003) % 10


def encode_video(
    path: Path, frames: Iterable[np.ndarray], fps: float, crf: int = 28
) -> Iterator[np.ndarray]:
    """Encode ``frames`` (RGB uint8) to H.264/yuv420p at ``path`` while passing them through."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream: Any = None
        for rgb in frames:
            if stream is None:
                stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
                stream.height, stream.width = rgb.shape[:2]
                stream.pix_fmt = "yuv420p"
                stream.options = {"crf": str(crf), "preset": "veryfast", "g": str(int(2 * fps))}
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
            yield rgb
        if stream is not None:
            for packet in stream.encode():
                container.mux(packet)


def decode_video(path: Path) -> Iterator[np.ndarray]:
    """Decoded RGB frames of a video file, in order."""
    import av

    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            yield frame.to_ndarray(format="rgb24")


def gt_lines(frame_no: int, objects: list[SynthObject]) -> list[str]:
    """MOTChallenge rows ``frame,id,x,y,w,h,conf,class,visibility`` (frame 1-based, 0-based px)."""
    return [
        f"{frame_no},{o.track_id},{o.box[0]},{o.box[1]},{o.box[2] - o.box[0]},"
        f"{o.box[3] - o.box[1]},1,{o.mot_class},{o.visibility:.4f}"
        for o in objects
    ]


def yolo_lines(objects: list[SynthObject], width: int, height: int) -> list[str]:
    """YOLO label rows ``class cx cy w h`` (normalised) under the documented visibility rule."""
    lines = []
    for o in objects:
        x1, y1, x2, y2 = o.clipped_box(width, height)
        if o.visibility < MIN_VISIBILITY or x2 - x1 < MIN_BOX_PX or y2 - y1 < MIN_BOX_PX:
            continue
        lines.append(
            f"{o.class_id} {(x1 + x2) / 2 / width:.6f} {(y1 + y2) / 2 / height:.6f} "
            f"{(x2 - x1) / width:.6f} {(y2 - y1) / height:.6f}"
        )
    return lines


def write_seqinfo(seq_dir: Path, name: str, cfg: SceneConfig, length: int) -> None:
    seq_dir.mkdir(parents=True, exist_ok=True)
    (seq_dir / "seqinfo.ini").write_text(
        "[Sequence]\n"
        f"name={name}\nimDir=img1\nframeRate={cfg.fps:g}\nseqLength={length}\n"
        f"imWidth={cfg.width}\nimHeight={cfg.height}\nimExt=.jpg\n"
    )


def _tap(
    frames: Iterable[tuple[np.ndarray, list[SynthObject]]], sink: list[list[SynthObject]]
) -> Iterator[np.ndarray]:
    for rgb, objs in frames:
        sink.append(objs)
        yield rgb


@dataclass
class VideoSummary:
    name: str
    split: str  # train | val | test
    frames: int
    objects: int  # gt rows
    tracks: int
    images: int
    labels: int
    crf: int
    seconds_generating: float


@dataclass
class SynthSummary:
    out: str
    videos: list[VideoSummary] = field(default_factory=list)

    def totals(self) -> dict[str, int]:
        t: dict[str, int] = {}
        for v in self.videos:
            for k in ("frames", "objects", "images", "labels"):
                t[f"{v.split}_{k}"] = t.get(f"{v.split}_{k}", 0) + int(getattr(v, k))
        return t


def write_video_set(
    out: Path,
    seed: int,
    videos: int,
    seconds: float,
    fps: float = 25.0,
    size: tuple[int, int] = (640, 384),
    every: int = 5,
    val_videos: int = 0,
    split: str = "train",
    max_objects: int = 12,
    dataset: bool = True,
    crf: int | None = None,
    progress: bool = False,
) -> SynthSummary:
    """Write ``videos`` scenes under ``out``: videos/, mot/<name>/, dataset/{train,val}/.

    The last ``val_videos`` videos go to the ``val`` split, the others to ``split``.
    """
    if videos < 1 or every < 1 or not 0 <= val_videos <= videos:
        raise ValueError(
            "need videos >= 1, every >= 1, 0 <= val_videos <= videos "
            f"(got {videos}, {every}, {val_videos})"
        )
    out = Path(out)
    summary = SynthSummary(out=str(out))
    for i in range(videos):
        s = scene_seed(seed, i)
        cfg = SceneConfig(
            seed=s, seconds=seconds, fps=fps, width=size[0], height=size[1], max_objects=max_objects
        )
        name = f"synth-s{seed}-{i:03d}"
        part = "val" if i >= videos - val_videos else split
        v_crf = crf if crf is not None else video_crf(s)
        t0 = time.perf_counter()
        gt: list[str] = []
        per_frame: list[list[SynthObject]] = []
        frames = generate_scene(s, seconds, fps, size, max_objects=max_objects)
        video_path = out / "videos" / f"{name}.mp4"
        for _ in encode_video(video_path, _tap(frames, per_frame), fps, v_crf):
            pass
        for n, objs in enumerate(per_frame, start=1):
            gt.extend(gt_lines(n, objs))
        seq = out / "mot" / name
        write_seqinfo(seq, name, cfg, len(per_frame))
        (seq / "gt").mkdir(parents=True, exist_ok=True)
        (seq / "gt" / "gt.txt").write_text("\n".join(gt) + ("\n" if gt else ""))
        images = labels = 0
        if dataset:
            img_dir = out / "dataset" / part / "images"
            lab_dir = out / "dataset" / part / "labels"
            img_dir.mkdir(parents=True, exist_ok=True)
            lab_dir.mkdir(parents=True, exist_ok=True)
            decoded = 0
            for k, rgb in enumerate(decode_video(video_path)):
                decoded += 1
                if k % every or k >= len(per_frame):
                    continue
                stem = f"{name}_{k + 1:05d}"
                cv2.imwrite(
                    str(img_dir / f"{stem}.jpg"),
                    cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                    [cv2.IMWRITE_JPEG_QUALITY, 92],
                )
                lines = yolo_lines(per_frame[k], size[0], size[1])
                (lab_dir / f"{stem}.txt").write_text("\n".join(lines) + ("\n" if lines else ""))
                images += 1
                labels += len(lines)
            if decoded != len(per_frame):
                raise RuntimeError(
                    f"{video_path}: decoded {decoded} frames, wrote {len(per_frame)}"
                )
        summary.videos.append(
            VideoSummary(
                name=name,
                split=part,
                frames=len(per_frame),
                objects=len(gt),
                tracks=len({o.track_id for objs in per_frame for o in objs}),
                images=images,
                labels=labels,
                crf=v_crf,
                seconds_generating=round(time.perf_counter() - t0, 2),
            )
        )
        if progress:
            v = summary.videos[-1]
            print(
                f"{v.name} [{v.split}] {v.frames} frames, {v.tracks} tracks, {v.images} images, "
                f"{v.labels} labels, crf {v.crf}, {v.seconds_generating:.1f} s",
                flush=True,
            )
    if dataset:
        write_data_yaml(out / "dataset")
    (out / "synth.json").write_text(
        json.dumps(
            {
                "seed": seed,
                "videos": [asdict(v) for v in summary.videos],
                "totals": summary.totals(),
            },
            indent=2,
        )
        + "\n"
    )
    return summary


def write_data_yaml(dataset_dir: Path) -> None:
    """data.yaml for YOLO trainers: absolute path, splits that exist, class names."""
    names = "\n".join(f"  {i}: {n}" for i, n in enumerate(CLASS_NAMES))
    splits = [s for s in ("train", "val", "test") if (dataset_dir / s / "images").is_dir()]
    lines = [
        "# edgestream synth dataset. Boxes: full sprite box clipped to the image; objects with",
        f"# visibility < {MIN_VISIBILITY} or a clipped side < {MIN_BOX_PX} px are not labelled.",
        f"# MOT gt classes (mot/*/gt/gt.txt): {MOT_CLASS}",
        f"path: {dataset_dir.resolve()}",
    ]
    lines += [f"{s}: {s}/images" for s in splits]
    lines += [f"nc: {len(CLASS_NAMES)}", "names:", names]
    (dataset_dir / "data.yaml").write_text("\n".join(lines) + "\n")
