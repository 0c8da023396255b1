"""`kidneyseg predict ... --engine ray`: the cohort on Ray workers (:mod:`kidneyseg.inference.cohort`).

This module is what ``predict`` runs instead of its own loop when ``--engine ray`` is given; it builds
the list of cases (files, folders, quoted globs, CSV manifests), the :class:`PredictJob` each worker
runs (the same reading, prediction and writing as the one-process loop, so the outputs are the same
files), connects to Ray and prints the summary.  Ray is imported only here and in the cohort module.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kidneyseg.errors import InputError
from kidneyseg.inference.cohort import CohortCase


@dataclass
class PredictJob:
    """One worker's share of ``kidneyseg predict``: the model loaded once (:meth:`setup`), then one
    case at a time written into ``out`` exactly as the one-process command writes it.

    ``predict_kwargs`` go to :meth:`Predictor.predict_case`, ``save_kwargs`` to
    :func:`kidneyseg.reporting.export.save_prediction` (the command's options, as its own loop passes them).
    """

    model_dirs: list[str]
    tta: bool = False
    threads: int | None = None
    runtime: str | None = None
    postprocess: bool = True
    modality: str | None = None
    spacing: tuple[float, float] | None = None
    output_format: str | None = None
    predict_kwargs: dict[str, Any] = field(default_factory=dict)
    save_kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._predictor: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_predictor"}  # a loaded model is not sent

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._predictor = None

    def setup(self) -> None:
        from kidneyseg.cli import _plain_pages
        from kidneyseg.inference import Predictor

        _plain_pages()  # a Ray worker is a kidneyseg process too (no huge-page compaction stalls)
        dirs = [Path(d) for d in self.model_dirs]
        self._predictor = Predictor(dirs if len(dirs) > 1 else dirs[0], tta=self.tta, threads=self.threads,
                                    runtime=self.runtime, postprocess=self.postprocess)

    def _format(self, path: Path) -> str:
        from kidneyseg.io import IMAGE_2D_SUFFIXES, image_suffix

        return self.output_format or ("png" if image_suffix(path) in IMAGE_2D_SUFFIXES else "nifti")

    def run(self, case: CohortCase, out: Path) -> str:
        from kidneyseg.cli.predict import _check_dicom_seg_sources
        from kidneyseg.data.slices import read_image
        from kidneyseg.reporting.export import save_prediction

        if self._predictor is None:
            self.setup()
        fmt = self._format(case.path)
        if fmt == "dicom-seg" and case.path.is_dir():
            _check_dicom_seg_sources(case.path)  # refuse before reading pixels or running the network
        modality = self.modality or self._predictor.modality or None
        image = read_image(case.path, spacing=self.spacing, modality=modality)
        result = self._predictor.predict_case(image, **self.predict_kwargs)
        written = save_prediction(result, out, fmt=fmt, name=case.name, **self.save_kwargs)
        return str(written["line"])

    def outputs(self, case: CohortCase, out: Path) -> list[Path]:
        from kidneyseg.reporting.export import FORMATS

        files = [out / f"{case.name}{FORMATS[self._format(case.path)]}", out / f"{case.name}_volumes.json"]
        if self.save_kwargs.get("save_probabilities"):
            files.append(out / f"{case.name}_probabilities.npz")
        if self.save_kwargs.get("save_uncertainty"):
            files.append(out / f"{case.name}_uncertainty.nii.gz")
        return files

    def fingerprint(self) -> dict[str, Any]:
        return {"models": [str(Path(d).resolve()) for d in self.model_dirs], "tta": self.tta, "runtime": self.runtime,
                "postprocess": self.postprocess, "modality": self.modality,
                "spacing": list(self.spacing) if self.spacing else None, "output_format": self.output_format,
                "predict": dict(sorted(self.predict_kwargs.items())), "save": dict(sorted(self.save_kwargs.items()))}


def cohort_cases(inputs: list[str]) -> list[CohortCase]:
    """The cases of the command line: image files, DICOM folders, folders of cases, quoted globs and CSV
    manifests (``.csv``: :func:`kidneyseg.inference.cohort.read_manifest`), named as ``predict`` names them."""
    from kidneyseg.cli.predict import expand_inputs
    from kidneyseg.inference.cohort import expand_globs, name_cases, read_manifest

    paths: list[Path] = []
    names: list[str | None] = []
    for raw in expand_globs(inputs):
        p = Path(raw)
        if p.is_file() and p.suffix.lower() == ".csv":
            for img, name in read_manifest(p):
                paths.append(img)
                names.append(name)
        else:
            for c in expand_inputs([raw]):
                paths.append(c)
                names.append(None)
    return name_cases(paths, names)


def run_ray(args: argparse.Namespace) -> int:
    """``kidneyseg predict`` with ``--engine ray``; returns the exit code (1 when a case failed)."""
    from kidneyseg.cli.predict import guess_modality
    from kidneyseg.inference import cohort, resolve_model
    from kidneyseg.io._common import check_spacing_option

    if args.engine != "ray":
        raise InputError("--address and --workers are options of the Ray engine",
                         found=f"--engine {args.engine}", expected="--engine ray",
                         fix="add --engine ray, or drop --address/--workers")
    check_spacing_option(args.spacing)
    threads = int(args.threads) if args.threads else 1
    if threads < 1:
        raise InputError("threads must be at least 1", found=threads, fix="pass --threads 1 or more")
    cases = cohort_cases(args.inputs)
    spacing = (float(args.spacing[0]), float(args.spacing[1])) if args.spacing else None
    chosen = args.modality
    if args.model is None and chosen is None:
        chosen = guess_modality([c.path for c in cases], spacing)
    model_dirs = [resolve_model(m, chosen) for m in args.model] if args.model else [resolve_model(None, chosen)]
    # what the one-process loop of `predict` passes to the predictor and the writer, passed alike
    predict_kwargs: dict[str, Any] = {"probabilities": args.save_probabilities,
                                      "uncertainty": "map" if args.save_uncertainty else
                                      ("structures" if not args.no_qc else False)}
    save_kwargs: dict[str, Any] = {"save_probabilities": args.save_probabilities,
                                   "save_uncertainty": bool(args.save_uncertainty), "qc": not args.no_qc}
    job = PredictJob(model_dirs=[str(d) for d in model_dirs], tta=args.tta, threads=threads, runtime=args.runtime,
                     postprocess=not args.no_postprocess, modality=args.modality, spacing=spacing,
                     output_format=args.output_format, predict_kwargs=predict_kwargs, save_kwargs=save_kwargs)
    if args.tta:  # a model that cannot mirror is refused here, once, not by every worker
        from kidneyseg.inference import Predictor

        Predictor(model_dirs if len(model_dirs) > 1 else model_dirs[0], tta=True, threads=threads, runtime=args.runtime)
    out = Path(args.output)
    started = cohort.connect(args.address)
    try:
        rows = cohort.run_cohort(cases, out, job, workers=args.workers, cpus_per_worker=threads,
                                 progress=not getattr(args, "quiet", False))
    finally:
        if started:
            cohort._ray().shutdown()
    failed = [r for r in rows if r["status"] != "ok"]
    skipped = sum(1 for r in rows if r.get("skipped"))
    print(f"kidneyseg predict: {len(rows) - len(failed)} of {len(rows)} case(s) done"
          + (f" ({skipped} by an earlier run)" if skipped else "") + f"; summary: {out / cohort.SUMMARY}",
          file=sys.stderr)
    if failed:
        print(f"kidneyseg predict: {len(failed)} of {len(rows)} case(s) failed: "
              + ", ".join(r["input"] for r in failed), file=sys.stderr)
        return 1
    return 0
