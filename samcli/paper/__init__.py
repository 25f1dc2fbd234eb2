"""`samcli reproduce`: the paper's predictions, each checked by running the engine.

Every study trains with `samcli.train.train` (the loop users train their models with) on a `Task`,
measures with `samcli.sharpness` where it measures sharpness, and writes into OUT/NAME/: config.yaml,
verdicts.md (one PASS / FAIL / open line per prediction, with the numbers), results.json, tables
(.csv + .md) and PNG plots. The studies are listed in STUDIES; each lives in paper/studies/NAME.py and
reads its settings from the packaged paper/configs/NAME.yaml.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Optional

from ..config import ConfigError
from ..errors import near_miss
from ..runs import refuse_empty_out
from .configs import load_study_config
from .skeleton import Log, PaperStudy, StudyResult, quiet, run_study, write_index
from .studies.batchsize import BatchsizeConfig, batchsize
from .studies.bias import BiasConfig, bias
from .studies.corollaries import CorollariesConfig, corollaries
from .studies.figure1 import Figure1Config, figure1
from .studies.network import NetworkConfig, network
from .studies.quadratic import QuadraticConfig, quadratic_study
from .studies.timescale import TimescaleConfig, timescale

STUDIES = {s.name: s for s in [
    PaperStudy("figure1",
               "4-parameter toy: GD, full-batch SAM, 1-SAM, ascent-GD end points; limiting flows and their gap",
               Figure1Config, figure1),
    PaperStudy("bias", "Thm 4.2 / Table 1: minimizers of L^Max, L^Asc, L^Avg (line search) go to argmin F1, F2, F1+F2 "
          "as rho shrinks", BiasConfig, bias),
    PaperStudy("quadratic",
          "full-batch SAM on 0.5 x^T A x: ||x_t|| -> eta rho lambda_1/(2 - eta lambda_1), direction -> v_1",
          QuadraticConfig, quadratic_study),
    PaperStudy("timescale", "drift along the manifold scales with eta rho^2 t: halving rho needs 4x the steps",
          TimescaleConfig, timescale),
    PaperStudy("network", "Thm 4.5 / 5.4 on an MLP in their regimes: drift along -P grad lambda_1 (SAM) and -P grad Tr "
          "(1-SAM), the ratio test, alignment on a rho/eta ladder", NetworkConfig, network),
    PaperStudy("corollaries", "Cor 4.6 and Cor 5.6 bands along SAM's and 1-SAM's iterates, Phase I length, Thm 5.3 "
          "(stochastic notions -> trace)", CorollariesConfig, corollaries),
    PaperStudy("batchsize", "the open case (Example 5.8): SAM at batch sizes 1..full, Tr, lambda_1 and alignment",
          BatchsizeConfig, batchsize),
]}


def study_named(name: str) -> PaperStudy:
    """The registered study called `name`; an unknown name is a ConfigError listing the studies."""
    if name not in STUDIES:
        near = near_miss(name, [*STUDIES, "all"])
        hint = f" (did you mean {near}?)" if near else ""
        raise ConfigError(f"unknown study {name!r}{hint}; choose from {', '.join(STUDIES)} or all (see --list)")
    return STUDIES[name]


def reproduce_study(name: str, out: Optional[Path] = None, *, quick: bool = False, config: Optional[Path] = None,
                    overrides: Sequence[str] = (), log: Log = quiet, **kwargs) -> StudyResult:
    """Run one study; results go to `out` (default results/paper/NAME). `kwargs` reach the study
    (e.g. toy=Figure1Toy(F1, F2) for figure1 and timescale)."""
    study = study_named(name)
    cfg = load_study_config(study.config, name, config, quick, overrides)
    refuse_empty_out(out, "results/paper/NAME")
    out = Path(out) if out is not None else Path("results/paper") / name
    return run_study(study, cfg, out, quick=quick, log=log, **kwargs)


def reproduce(name: str, out: Path = Path("results/paper"), *, quick: bool = False, config: Optional[Path] = None,
              overrides: Sequence[str] = (), log: Log = quiet,
              on_result: Callable[[StudyResult], None] = lambda _: None) -> list[StudyResult]:
    """One study (into OUT/NAME/) or "all" of them, then OUT/summary.md and summary.json;
    `on_result` sees each study as it finishes."""
    refuse_empty_out(out, "results/paper")
    if name != "all":
        study_named(name)
    elif config is not None or overrides:
        raise ConfigError("--config and --set apply to one study; run the studies one by one to change their settings")
    results = []
    for study in (STUDIES if name == "all" else [name]):
        results.append(reproduce_study(study, Path(out) / study, quick=quick, config=config, overrides=overrides,
                                       log=log))
        on_result(results[-1])
    if name == "all":
        write_index(results, Path(out))
    return results


__all__ = ["STUDIES", "PaperStudy", "StudyResult", "reproduce", "reproduce_study", "study_named"]
