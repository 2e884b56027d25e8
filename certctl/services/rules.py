"""The decisions the store applies inside its transactions, given to it when it opens.

A certificate's renewal date is recomputed in the same transaction as the version or
policy it follows, and a job's claimed state is written by the statement that locks it;
the store runs both but decides neither. Every store is opened with ``DOMAIN_RULES``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final

from certctl.core.jobs import Claimed, transition
from certctl.core.model import Job, RenewalPolicy
from certctl.core.renewal import renewal_due_at

__all__ = ["DOMAIN_RULES"]


class _CoreRules:
    """``certctl.store.base.DomainRules`` from the deterministic core."""

    def renewal_due_at(
        self, not_before: datetime, not_after: datetime, policy: RenewalPolicy
    ) -> datetime:
        return renewal_due_at(not_before, not_after, policy)

    def claimed(self, job: Job, agent_id: str | None, now: datetime) -> Job:
        job, _ = transition(job, Claimed(agent_id), now)
        return job


DOMAIN_RULES: Final = _CoreRules()
