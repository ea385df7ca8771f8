"""Where faces come from: the inputs of a run (image files, folders, video files, webcam indices) and the
look-ahead that finds the faces of the next photos on worker threads while the current ones are classified."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from fer_lightning.deploy.recognizer import EmotionRecognizer, FoundFaces

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv"}


@dataclass(frozen=True)
class Input:
    kind: str  # image | video | camera | error
    source: str | int
    error: str = ""

    @property
    def name(self) -> str:
        return f"camera:{self.source}" if self.kind == "camera" else str(self.source)


def expand_inputs(items: Sequence[str]) -> list[Input]:
    """Files by suffix (videos by theirs, anything else is tried as an image), folders recursively (image and
    video files only, sorted), a bare digit string as a webcam index."""
    out: list[Input] = []
    for item in items:
        path = Path(item).expanduser()
        if item.isdigit() and not path.exists():
            out.append(Input("camera", int(item)))
        elif path.is_dir():
            found = sorted(
                p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES
            )
            out += [Input("video" if p.suffix.lower() in VIDEO_SUFFIXES else "image", str(p)) for p in found]
            if not found:
                out.append(Input("error", item, "folder has no image or video files"))
        elif path.is_file():
            out.append(Input("video" if path.suffix.lower() in VIDEO_SUFFIXES else "image", item))
        else:
            out.append(Input("error", item, "no such file or directory"))
    return out


def found_ahead(
    items: Sequence[Input], recognizer: EmotionRecognizer, workers: int
) -> Iterator[tuple[Input, Future[FoundFaces] | None]]:
    """Each input, in order, with (for an image, when ``workers`` > 1) the future of its faces, found by
    ``workers`` threads up to ``2 * workers`` images ahead of the caller.

    Decoding (Pillow), detecting (ONNX Runtime, OpenCV) and aligning release the GIL, so the threads keep that
    many cores busy on the costly part of a photo while the caller classifies the faces in batches and writes
    the records in input order. Each thread finds faces with a detector of its own and one intra-op thread."""
    if workers <= 1:
        yield from ((item, None) for item in items)
        return
    local = threading.local()

    def find(path: str) -> FoundFaces:
        if not hasattr(local, "recognizer"):
            local.recognizer = recognizer.with_own_detector(threads=1)
        return local.recognizer.find_faces_in_file(path)

    with ThreadPoolExecutor(workers, thread_name_prefix="fer-predict-faces") as pool:
        ahead: deque[tuple[Input, Future[FoundFaces] | None]] = deque()
        for item in items:
            ahead.append((item, pool.submit(find, str(item.source)) if item.kind == "image" else None))
            while len(ahead) > 2 * workers or (ahead and ahead[-1][1] is None):  # a video: its turn comes in order
                yield ahead.popleft()
        yield from ahead
