"""The broker, the stages and their queues, and how a message reaches one."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import dramatiq
import dramatiq.broker
from dramatiq.brokers.rabbitmq import RabbitmqBroker

from config.settings import Settings, get_settings
from shared.messages import (
    ArchiveEmails,
    EmailClassified,
    EmailFiled,
    EmailReceived,
    FetchMailbox,
    Message,
    SendEmail,
)

log = logging.getLogger(__name__)

M = TypeVar("M", bound=Message)


@dataclass(frozen=True)
class Stage:
    name: str
    queue: str
    accepts: type[Message]


STAGES: dict[str, Stage] = {
    s.name: s
    for s in (
        Stage("fetcher", "fetch", FetchMailbox),
        Stage("classifier", "classify", EmailReceived),
        Stage("records", "records", EmailClassified),
        Stage("responder", "respond", EmailFiled),
        Stage("sender", "send", SendEmail),
        Stage("archiver", "archive", ArchiveEmails),
    )
}
_BY_MESSAGE = {stage.accepts: stage for stage in STAGES.values()}


def install_broker(settings: Settings | None = None) -> dramatiq.Broker:
    """Make the RabbitMQ broker of the settings the one every actor uses."""
    settings = settings or get_settings()
    broker = RabbitmqBroker(url=settings.broker_url, confirm_delivery=True)
    dramatiq.set_broker(broker)
    return broker


def get_broker() -> dramatiq.Broker:
    if dramatiq.broker.global_broker is None:
        return install_broker()
    return dramatiq.get_broker()


def publish(message: Message, *, delay_ms: int | None = None) -> None:
    """Hand a message to the stage that handles its type."""
    stage = _BY_MESSAGE[type(message)]
    envelope: dramatiq.Message[Any] = dramatiq.Message(
        queue_name=stage.queue,
        actor_name=stage.name,
        args=(message.model_dump(mode="json"),),
        kwargs={},
        options={},
    )
    get_broker().enqueue(envelope, delay=delay_ms)


def stage_actor(name: str, **options: Any) -> Callable[[Callable[[M], None]], Any]:
    """Declare the actor of a stage: it decodes the message and logs one line.

    The function receives the stage's typed message; what it raises goes to
    dramatiq's retries and, when they run out, to the queue's dead letters.
    """
    stage = STAGES[name]

    def decorate(handle: Callable[[M], None]) -> Any:
        def run(payload: dict[str, Any]) -> None:
            message = stage.accepts.model_validate(payload)
            started = time.perf_counter()
            try:
                handle(message)  # type: ignore[arg-type]
            except Exception:
                log.warning("%s %s failed", name, message, exc_info=True)
                raise
            log.info(
                "%s %s done in %.0f ms",
                name,
                message,
                (time.perf_counter() - started) * 1000,
            )

        run.__name__ = name
        declare = dramatiq.actor(
            actor_name=stage.name,
            queue_name=stage.queue,
            broker=get_broker(),
            **options,
        )
        return declare(run)

    return decorate
