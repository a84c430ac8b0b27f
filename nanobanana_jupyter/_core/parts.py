"""The parts of one session, each owning one job, wired together.

Who calls whom: the submitter starts tasks and hands what it sent to the tracker; the tracker
polls (with leases) and hands a success to the collector; the reconciler turns webhook
callbacks into queries; every change goes through the registry, which shows it on the handle
and queues it on the event bus. The engine reaches the parts only through weak references,
so a dropped session (and its parts) is collected and its finalizer closes its resources.
"""

from __future__ import annotations

import weakref

from nanobanana_jupyter._store.images import ImageStore

from .collector import Collector
from .events import EventBus
from .handles import Registry
from .reconciler import Reconciler
from .resources import Resources
from .submitter import Submitter
from .support import weak_async_method, weak_method
from .task import TaskOwner
from .tracker import Tracker, maintain
from .webhook import WebhookReceiver

__all__ = ["Parts"]


class Parts:
    """A session's registry, event bus, submitter, tracker, collector and reconciler."""

    def __init__(
        self,
        owner: TaskOwner,
        resources: Resources,
        images: ImageStore,
        *,
        lease_ttl: float,
        max_submits_per_second: float,
        webhook: bool,
        webhook_url: str | None,
    ) -> None:
        res = resources
        self.events = EventBus()
        self.registry = Registry(owner, res.store, self.events)
        self.collector = Collector(res, images, self.registry)
        self.tracker = Tracker(
            res, self.registry, self.collector, settings=res.settings, lease_ttl=lease_ttl
        )
        self.reconciler = Reconciler(res, self.registry, self.tracker)
        self.submitter = Submitter(
            res,
            self.registry,
            self.tracker,
            self.reconciler,
            max_submits_per_second=max_submits_per_second,
        )
        # The engine calls the parts only through weak references.
        res.on_retry = weak_method(self.submitter.on_client_retry)
        res.on_close_unsent = weak_method(self.submitter.settle_unsent)
        res.on_decision = weak_async_method(self.tracker.on_decision)
        tracker_ref = weakref.ref(self.tracker)
        res.maintain = lambda: maintain(tracker_ref, lease_ttl / 3)
        if webhook or webhook_url:
            res.receiver = WebhookReceiver(
                weak_method(self.reconciler.on_hint), public_url=webhook_url
            )
            res.engine.run(res.receiver.start(), timeout=10)
