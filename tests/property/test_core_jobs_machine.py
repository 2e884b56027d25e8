"""Random event sequences against the job state machine.

The oracle is independent of how ``transition`` is written: ``TRANSITIONS`` (pinned to the
reference table by a unit test) says which (state, event) pairs can ever be legal, and the
guards are restated here from the design. Every step checks that an accepted event lands
where the table says with the bookkeeping the design asks for, and that a refused one
raises ``IllegalTransition`` and leaves the job as it was.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from certctl.core.jobs import (
    RETRY_DELAY_CAP_SECONDS,
    TRANSITIONS,
    AgentOffline,
    Approved,
    AuditRecord,
    Cancel,
    Claimed,
    CreateDeploymentJobs,
    CSRRequested,
    CSRSubmitted,
    Event,
    Failure,
    IllegalTransition,
    JobFailedPermanently,
    RecordDeployment,
    Rejected,
    RetryDue,
    Succeeded,
    TimedOut,
    create_job,
    is_final,
    transition,
)
from certctl.core.model import Job, JobStatus, JobType, RenewalPolicy

S = JobStatus
AGENTS = ("agent-a", "agent-b")
FAILING = (Failure, TimedOut, AgentOffline)
FINISHED = {S.COMPLETED, S.FAILED, S.CANCELLED}
EPOCH = datetime(2030, 1, 1, tzinfo=UTC)
TICK = timedelta(microseconds=1)

times = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)
events: st.SearchStrategy[Event] = st.one_of(
    st.builds(Claimed, st.sampled_from((None, *AGENTS))),
    st.just(CSRRequested()),
    st.just(CSRSubmitted()),
    st.just(Succeeded()),
    st.builds(Failure, st.sampled_from(("issuer down", "CSR rejected", ""))),
    st.just(TimedOut(timedelta(hours=24))),
    st.builds(
        AgentOffline,
        st.sampled_from(AGENTS),
        st.sampled_from((None, EPOCH)),
        st.sampled_from((None, EPOCH)),
    ),
    st.just(RetryDue()),
    st.just(Approved()),
    st.just(Rejected()),
    st.just(Cancel()),
)
EVERY_EVENT_KIND: tuple[Event, ...] = (
    Claimed(),
    Claimed("agent-a"),
    CSRRequested(),
    CSRSubmitted(),
    Succeeded(),
    Failure("x"),
    TimedOut(timedelta(hours=1)),
    AgentOffline("agent-a", None),
    RetryDue(),
    Approved(),
    Rejected(),
    Cancel(),
)


def allowed_by_guards(job: Job, event: Event, now: datetime) -> bool:
    """The design's guards, restated: who may claim, what can await a CSR, whose agent is
    offline, when a retry is due, and that a permanent failure cannot be cancelled."""
    match event:
        case Claimed(agent_id=agent_id):
            routed = agent_id is not None and job.agent_id in (None, agent_id)
            return routed if job.type is JobType.DEPLOYMENT else agent_id is None
        case CSRRequested():
            return job.type is not JobType.DEPLOYMENT
        case AgentOffline(agent_id=agent_id):
            return agent_id == job.agent_id
        case RetryDue():
            return job.next_retry_at is not None and now >= job.next_retry_at
        case Cancel():
            return job.status is not S.FAILED or job.next_retry_at is not None
        case _:
            return True


class JobMachine(RuleBasedStateMachine):
    job: Job
    now: datetime

    @initialize(
        job_type=st.sampled_from(JobType),
        status=st.sampled_from((S.PENDING, S.AWAITING_CSR, S.AWAITING_APPROVAL)),
        max_retries=st.integers(0, 4),
        interval=st.integers(60, 86_400),
        agent_id=st.sampled_from((None, "agent-a")),
        start=times,
    )
    def create(
        self,
        *,
        job_type: JobType,
        status: JobStatus,
        max_retries: int,
        interval: int,
        agent_id: str | None,
        start: datetime,
    ) -> None:
        if job_type is JobType.DEPLOYMENT:
            status = S.PENDING
        else:
            agent_id = None
        policy = RenewalPolicy(
            id="rp", name="p", max_retries=max_retries, retry_interval_seconds=interval
        )
        self.now = start
        self.job = create_job(
            job_id="job-1",
            job_type=job_type,
            certificate_id="cert-1",
            policy=policy,
            now=start,
            status=status,
            target_id="target-1",
            agent_id=agent_id,
        )

    @rule(seconds=st.integers(0, 3 * 86_400))
    def advance(self, seconds: int) -> None:
        self.now += timedelta(seconds=seconds)

    @precondition(lambda machine: machine.job.next_retry_at is not None)
    @rule(offset=st.sampled_from((-TICK, timedelta(0), TICK)))
    def retry_at_the_boundary(self, offset: timedelta) -> None:
        """Try the retry around ``next_retry_at``, which whole-second steps almost never hit."""
        assert self.job.next_retry_at is not None
        self.now = max(self.now, self.job.next_retry_at + offset)
        self.apply(RetryDue(), 0.0)

    @precondition(lambda machine: not is_final(machine.job))
    @rule(event=events, draw=st.floats(0, 1, exclude_max=True))
    def apply(self, event: Event, draw: float) -> None:
        before = self.job
        snapshot = copy.copy(before)  # every field is immutable, so a shallow copy is exact
        target = TRANSITIONS.get((before.status, type(event)))
        legal = target is not None and allowed_by_guards(before, event, self.now)
        try:
            after, effects = transition(before, event, self.now, jitter_draw=draw)
        except IllegalTransition as error:
            refused = error
        else:
            assert legal, f"{event} accepted from {before.status}"
            assert target is not None
            self.check_step(before, event, after, effects, target)
            if is_final(after):
                self.check_nothing_moves(after)
            self.job = after
            return
        assert not legal, f"{event} refused from {before.status}: {refused}"
        assert (refused.job_id, refused.status, refused.event) == (
            before.id,
            before.status,
            type(event).__name__,
        )
        assert before == snapshot

    def check_step(
        self,
        before: Job,
        event: Event,
        after: Job,
        effects: tuple[object, ...],
        target: JobStatus,
    ) -> None:
        now = self.now
        failing = isinstance(event, FAILING)
        assert after.status is target
        assert after.status_changed_at == now
        assert effects[0] == AuditRecord(
            event.action, before.id, before.status, target, after.last_error if failing else None
        )
        assert after.attempts == before.attempts + (1 if failing else 0)
        if target is S.RUNNING:
            assert after.started_at == now
        if target in FINISHED:
            assert after.completed_at == now
        if isinstance(event, Succeeded):
            expected = (
                RecordDeployment(before.certificate_id, before.target_id, now)
                if before.type is JobType.DEPLOYMENT
                else CreateDeploymentJobs(before.certificate_id)
            )
            assert effects[1:] == (expected,)
        elif failing:
            permanent = after.attempts == after.max_attempts or before.status is S.AWAITING_APPROVAL
            assert (after.next_retry_at is None) is permanent
            if permanent:
                assert effects[1:] == (
                    JobFailedPermanently(
                        before.id,
                        before.type,
                        before.certificate_id,
                        after.attempts,
                        after.last_error or "",
                    ),
                )
            else:
                assert after.next_retry_at is not None
                delay = after.next_retry_at - now
                assert timedelta(0) < delay <= timedelta(seconds=RETRY_DELAY_CAP_SECONDS)
                assert effects[1:] == ()
        else:
            assert effects[1:] == ()

    def check_nothing_moves(self, job: Job) -> None:
        """A final job refuses every kind of event, however much later it arrives."""
        for event in EVERY_EVENT_KIND:
            try:
                transition(job, event, self.now + timedelta(days=3650))
            except IllegalTransition:
                continue
            raise AssertionError(f"final job {job.status} accepted {event}")

    @invariant()
    def bookkeeping_is_consistent(self) -> None:
        job = self.job
        assert isinstance(job.status, JobStatus)
        assert 0 <= job.attempts <= job.max_attempts
        assert (job.completed_at is not None) is (job.status in FINISHED)
        assert job.status is not S.RUNNING or job.started_at is not None
        assert job.status is S.FAILED or job.next_retry_at is None
        if job.type is JobType.DEPLOYMENT:
            assert job.status not in {S.AWAITING_CSR, S.AWAITING_APPROVAL}


TestJobMachine = JobMachine.TestCase
# One example is a whole run of up to 50 steps, so a tenth of the profile's examples still
# drives about ten thousand transitions per CI run (and proportionally more in the deep
# profile) while keeping this machine to seconds.
TestJobMachine.settings = settings(max_examples=max(1, settings().max_examples // 10))


@given(
    max_retries=st.integers(0, 10),
    interval=st.integers(60, 86_400),
    draw=st.floats(0, 1, exclude_max=True),
)
def test_a_job_that_always_fails_stops_after_exactly_max_attempts(
    max_retries: int, interval: int, draw: float
) -> None:
    policy = RenewalPolicy(
        id="rp", name="p", max_retries=max_retries, retry_interval_seconds=interval
    )
    job = create_job(
        job_id="job-1", job_type=JobType.RENEWAL, certificate_id="c", policy=policy, now=EPOCH
    )
    now, failures = EPOCH, 0
    while not is_final(job):
        job, _ = transition(job, Claimed(), now)
        job, effects = transition(job, Failure("issuer down"), now, jitter_draw=draw)
        failures += 1
        if job.next_retry_at is not None:
            assert job.next_retry_at > now
            now = job.next_retry_at
            job, _ = transition(job, RetryDue(), now)
    assert failures == job.attempts == policy.max_attempts == max_retries + 1
    assert isinstance(effects[-1], JobFailedPermanently)
