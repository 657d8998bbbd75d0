"""The operator contract: declared columns, declared resources, a Ray Data transform.

Every operator says which columns it requires and which it produces (and which transient
ones it drops). :class:`pipeline.dag.Pipeline` checks the chain on the driver before any
task or actor starts, so a misspelled column fails in a second, not after model load.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import ray.data


@dataclass(frozen=True)
class Resources:
    """Resources one task or actor of an operator asks Ray for."""

    num_cpus: float = 1.0
    num_gpus: float = 0.0
    memory: int | None = None

    def ray_args(self) -> dict:
        """Keyword arguments for ``Dataset.map_batches``."""
        args: dict = {"num_cpus": self.num_cpus}
        if self.num_gpus:
            args["num_gpus"] = self.num_gpus
        if self.memory:
            args["memory"] = self.memory
        return args


class Operator(ABC):
    """One unit of work in a pipeline.

    Subclasses set :attr:`name`, and return their column contracts from :meth:`requires`,
    :meth:`produces` and :meth:`drops`; :meth:`apply` adds their step to a lazy Ray dataset.
    """

    name: str = "operator"

    @abstractmethod
    def requires(self) -> tuple[str, ...]:
        """Columns that must exist in the rows this operator receives."""

    @abstractmethod
    def produces(self) -> tuple[str, ...]:
        """Columns this operator adds or overwrites."""

    def drops(self) -> tuple[str, ...]:
        """Columns this operator removes (transient data such as bytes)."""
        return ()

    def check(self) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Validate settings on the driver before anything runs; raise ``ValueError`` with a clear message."""

    @abstractmethod
    def apply(self, ds: ray.data.Dataset) -> ray.data.Dataset:
        """Return ``ds`` with this operator's step appended (lazily)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class SourceOperator(ABC):
    """The first step of a pipeline: produces rows from somewhere."""

    name: str = "source"

    @abstractmethod
    def produces(self) -> tuple[str, ...]:
        """Columns of the rows this source yields."""

    def check(self) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Validate settings on the driver; raise ``ValueError`` with a clear message."""

    @abstractmethod
    def read(self) -> ray.data.Dataset:
        """Return the lazy dataset of source rows."""

    def count(self) -> int | None:
        """Number of rows the source yields, where known without reading (for the manifest)."""
        return None

    def ids(self) -> list[str] | None:
        """Ids of the rows the source yields, where known at listing (resume and schedules count with them)."""
        return None
