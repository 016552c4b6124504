"""The largest model of the workload's family that fits, per ZeRO stage, GPU count and offload.

The ladder (:func:`simtune.prediction.planning.family_ladder`) holds the family's published shapes and
larger ones with the largest shape's aspect ratio, about doubling the parameters each step. A
member fits when some configuration of the stage fits at micro-batch size 1 (any bucket size,
overlap and stage-3 memory setting of the planning grid, with or without activation
checkpointing); the answer is the member before the first that does not fit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

from simtune.prediction.planning import OFFLOAD_MODES, FamilyMember, Planner, largest_fitting_model


@dataclass(frozen=True)
class LargestModelCell:
    profile: str
    gpus: int
    stage: int
    offload: str
    index: Optional[int]
    """Ladder index of the largest member that fits; None when none does."""
    beyond_ladder: bool


@dataclass(frozen=True)
class LargestModels:
    family: str
    labels: tuple[str, ...]
    parameters: tuple[int, ...]
    extrapolated: tuple[bool, ...]
    cells: tuple[LargestModelCell, ...]
    """Only the (stage, offload) pairs that apply: optimizer offload from stage 1, parameter
    offload at stage 3."""

    def cell(self, profile: str, gpus: int, stage: int, offload: str) -> Optional[LargestModelCell]:
        for c in self.cells:
            if (c.profile, c.gpus, c.stage, c.offload) == (profile, gpus, stage, offload):
                return c
        return None

    def parameters_of(self, cell: LargestModelCell) -> Optional[int]:
        return None if cell.index is None else self.parameters[cell.index]


def largest_models(ladder: Sequence[FamilyMember], planners: Mapping[tuple[str, int], Sequence[Planner]],
                   stages: Sequence[int] = (0, 1, 2, 3), offloads: Sequence[str] = OFFLOAD_MODES) -> LargestModels:
    """``planners``: per (profile name, GPU count), a planner per ladder member
    (:func:`~simtune.prediction.planning.ladder_planners`), in the order profiles and counts are shown."""
    cells = []
    for (profile, gpus), members in planners.items():
        for stage in stages:
            for offload in offloads:
                found = largest_fitting_model(members, stage, offload)
                if found is not None:
                    cells.append(LargestModelCell(profile, gpus, stage, offload, found.index, found.beyond_ladder))
    family = ladder[0].workload.family if ladder else ""
    return LargestModels(family, tuple(m.label for m in ladder), tuple(m.parameters for m in ladder),
                         tuple(m.extrapolated for m in ladder), tuple(cells))
