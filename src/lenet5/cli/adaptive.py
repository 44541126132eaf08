"""`hydra/sweeper=adaptive`: a study's seeds in rounds, each round only for the comparisons
still open, the family-wise error kept over the looks (`lenet5.report.sequential`).

The sweeper expands the study as Hydra's basic sweeper does, except the seed: it runs every
job at seeds 0..n_1-1 (the first look), reads the sweep's runs from the MLflow store, and
gives the next look's seeds only to the arms whose comparison with the baseline is still
open (and to the baseline while any is), until every comparison is resolved or given up, or
the last look is reached. Any launcher runs each round. A relaunch replays the rounds: the
jobs that finished are skipped with their recorded results, so the same decisions lead to
the same next round, and the study continues where it stopped.

Arms are the simple effects (one factor off its baseline level); other cells of a
factorial study keep their first look's seeds.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from lenet5.core import names
from lenet5.report.sequential import HOPE, decide, schedule, seed_differences, seeds_wanted
from lenet5.study.design import tags_for
from lenet5.study.nuisance import run_tags
from lenet5.tracking import parent

log = logging.getLogger("lenet5.sweep")


class AdaptiveSeeds(BasicSweeper):
    """`seeds`: {min, max} seeds per arm; `alpha`: the family-wise error rate; `give_up`:
    stop a comparison that even the last look could not resolve (`sequential.futile`)."""

    def __init__(
        self,
        max_batch_size: int | None = None,
        params: dict[str, str] | None = None,
        seeds: dict | DictConfig | None = None,
        alpha: float = 0.05,
        give_up: bool = True,
    ) -> None:
        super().__init__(max_batch_size, params)
        self.hope = HOPE if give_up else None
        seeds = OmegaConf.to_container(seeds) if isinstance(seeds, DictConfig) else seeds or {}
        self.looks = schedule(int(seeds.get("min", 3)), int(seeds.get("max", 20)))
        self.alpha = float(alpha)

    def sweep(self, arguments: list[str]) -> Any:
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        overrides = parser.parse_overrides([*self._parse_config(), *arguments])
        seed = [o for o in overrides if o.get_key_element() == "seed"]
        if seed:
            log.info(
                "adaptive seeds: the sweeper chooses the seeds (%s per arm); %s is not used",
                " -> ".join(map(str, self.looks)),
                seed[0].input_line,
            )
        rest = [o for o in overrides if o.get_key_element() != "seed"]
        combos = self.split_arguments(rest, None)[0]
        cells = [self._cell(c) for c in combos]
        self._tag_parent()
        have, want = [0] * len(combos), [self.looks[0]] * len(combos)
        returns, index, round_ = [], 0, 1
        while True:
            batch = [
                [*c, f"seed={s}"] for i, c in enumerate(combos) for s in range(have[i], want[i])
            ]
            if not batch:
                break
            log.info("adaptive seeds: round %d, %d jobs", round_, len(batch))
            for chunk in self.split_overrides_to_chunks(batch, self.max_batch_size):
                self.validate_batch_is_legal(chunk)
                results = self.launcher.launch(chunk, initial_job_idx=index)
                index += len(chunk)
                returns.append(results)
            have, round_ = list(want), round_ + 1
            want = self._next(cells, have)
        return returns

    def _cell(self, combo: list[str]) -> tuple[tuple[str, ...], str]:
        """The design cell and nuisance setting a job of `combo` gets tagged with (as its run
        will be: the same functions, on the same composed config)."""
        cfg = self.hydra_context.config_loader.load_sweep_config(self.config, [*combo, "seed=0"])
        tags = {**tags_for(dict(cfg.hydra.runtime.choices), 0), **run_tags(cfg)}
        factors = list(self.config.study.factors)
        return tuple(tags.get(f, "?") for f in factors), tags.get(names.NUISANCE, "")

    def _tag_parent(self) -> None:
        """The looks and alpha on the parent run: the report reads its verdicts with them."""
        from lenet5.tracking.stores import client_for  # MLflow: once a sweep runs

        info = parent.current()
        if info:
            client_for(info["tracking_uri"]).set_tag(
                info["parent_run_id"],
                names.ADAPTIVE,
                json.dumps({"looks": self.looks, "alpha": self.alpha, "hope": self.hope}),
            )

    def _next(self, cells: list[tuple[tuple[str, ...], str]], have: list[int]) -> list[int]:
        """Seeds each combo needs by the next decision, from the runs recorded so far."""
        from lenet5.report.reading import children_of  # MLflow: once a sweep runs
        from lenet5.tracking.stores import client_for

        info = parent.current()
        if not info:
            return have
        study = self.config.study
        factors, baseline = list(study.factors), {k: str(v) for k, v in study.baseline.items()}
        client = client_for(info["tracking_uri"])
        runs = children_of(client, info["experiment_id"], info["parent_run_id"])
        diffs = seed_differences(runs, factors, baseline)
        margin = float(study.margin)
        outcomes = decide(list(diffs.values()), self.looks, margin, self.alpha, hope=self.hope)
        wanted = dict(zip(diffs, seeds_wanted(outcomes, self.looks), strict=True))
        base = tuple(baseline[f] for f in factors)
        wanted[base] = max(
            [n for cell, n in wanted.items() if n > len(diffs[cell])] or [0]
        )  # the baseline follows the arms still open
        for cell, o in zip(diffs, outcomes, strict=True):
            log.info("adaptive seeds: %s: %s with %d seeds", "/".join(cell), o.verdict, o.n)
        return [max(h, wanted.get(cell, 0)) for (cell, _), h in zip(cells, have, strict=True)]
