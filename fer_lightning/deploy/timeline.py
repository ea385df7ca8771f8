"""``fer-predict clip.mp4 --timeline DIR``: each person's emotions over a video, from their tracked, smoothed
records (``fer_lightning.deploy.tracking``).

``DIR/<video stem>/`` (``_1``, ``_2``... when that is taken: nothing is overwritten) gets, per track,
``track_<id>.csv`` (time, frame, smoothed emotion and probabilities), ``timeline.png`` (one panel per track: the
smoothed probabilities as stacked areas over time, the top emotion as a coloured band above them) and
``summary.csv``: per track its first and last time, frames, and the share of its frames in each smoothed emotion
(frames are evenly spaced in a video, so that is the share of time).
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

from matplotlib.figure import Figure

from fer_lightning.atomic import atomic_write
from fer_lightning.deploy.recognizer import FaceResult

MAX_PANELS = 12  # the most tracks drawn (longest first); every track still gets its CSV and summary row


class TimelineWriter:
    """Collects one video's tracked faces (``add`` per frame, in order) and writes its timeline (``write``)."""

    def __init__(self, root: Path, stem: str, class_names: Sequence[str]) -> None:
        folder, n = root / stem, 0
        while folder.exists():
            n += 1
            folder = root / f"{stem}_{n}"
        self.folder, self.class_names = folder, list(class_names)
        self.rows: dict[int, list[tuple[float, int, FaceResult]]] = {}

    def add(self, frame: int, time_s: float, results: Sequence[FaceResult]) -> None:
        for result in results:
            self.rows.setdefault(result.track_id, []).append((time_s, frame, result))

    def summary(self) -> list[dict]:
        out = []
        for track_id, rows in sorted(self.rows.items()):
            emotions = [r.smoothed_emotion for _, _, r in rows]
            row = {"track_id": track_id, "first_s": rows[0][0], "last_s": rows[-1][0], "frames": len(rows)}
            row.update({f"share_{c}": emotions.count(c) / len(rows) for c in self.class_names})
            row["dominant"] = max(self.class_names, key=emotions.count)
            out.append(row)
        return out

    def write(self) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        for track_id, rows in self.rows.items():
            with atomic_write(self.folder / f"track_{track_id}.csv") as tmp, tmp.open("w", newline="") as fh:
                writer = csv.writer(fh)
                writer.writerow(["time_s", "frame", "emotion", *(f"s_{c}" for c in self.class_names)])
                for time_s, frame, r in rows:
                    writer.writerow(
                        [
                            round(time_s, 4),
                            frame,
                            r.smoothed_emotion,
                            *(f"{r.smoothed_probs[c]:.6f}" for c in self.class_names),
                        ]
                    )
        summary = self.summary()
        columns = ["track_id", "first_s", "last_s", "frames", *(f"share_{c}" for c in self.class_names), "dominant"]
        with atomic_write(self.folder / "summary.csv") as tmp, tmp.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, columns)
            writer.writeheader()
            writer.writerows(summary)
        with atomic_write(self.folder / "timeline.png") as tmp:
            self.plot().savefig(tmp, dpi=100, format="png")
        return self.folder

    def plot(self) -> Figure:
        tracks = sorted(self.rows.items(), key=lambda item: -len(item[1]))[:MAX_PANELS]
        fig = Figure(figsize=(10, 1.2 + 1.6 * max(1, len(tracks))))
        if not tracks:
            fig.text(0.5, 0.5, "no faces in this video", ha="center", va="center")
            return fig
        axes = fig.subplots(len(tracks), 1, squeeze=False, sharex=True)[:, 0]
        colours = {c: f"C{i}" for i, c in enumerate(self.class_names)}
        for ax, (track_id, rows) in zip(axes, sorted(tracks)):
            times = [t for t, _, _ in rows]
            stacks = [[r.smoothed_probs[c] for _, _, r in rows] for c in self.class_names]
            ax.stackplot(times, stacks, labels=self.class_names, colors=[colours[c] for c in self.class_names])
            for (t0, _, r), (t1, _, _) in zip(rows, [*rows[1:], rows[-1]]):  # the top emotion, a band above
                ax.axvspan(
                    t0, max(t1, t0 + 1e-3), ymin=1.0, ymax=1.08, color=colours[r.smoothed_emotion], clip_on=False
                )
            ax.set_ylim(0, 1)
            ax.set_ylabel(f"#{track_id}", rotation=0, labelpad=18)
        axes[-1].set_xlabel("time (s)")
        axes[0].legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
        fig.suptitle("emotions over time, per person (smoothed)")
        fig.tight_layout()
        return fig
