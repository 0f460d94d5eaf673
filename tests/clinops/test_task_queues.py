"""Every task reaches exactly one Celery queue, the one its route names (settings.CELERY_TASK_ROUTES):
the windows' and monitoring tasks the default queue, the therapy tasks their own."""
import json

import pytest
import redis
from celery import Celery
from django.conf import settings


@pytest.fixture
def broker():
    """A database of the test Redis that no worker consumes, with both queues declared (bound to
    the exchange) as the workers declare them when they start."""
    url = settings.REDIS_URL.rsplit("/", 1)[0] + "/12"
    client = redis.Redis.from_url(url)
    client.flushdb()
    sender = Celery("sender", broker=url, set_as_current=False)
    sender.conf.update(task_routes=settings.CELERY_TASK_ROUTES, task_queues=settings.CELERY_TASK_QUEUES,
                       task_default_queue=settings.CELERY_TASK_DEFAULT_QUEUE)
    with sender.connection_for_write() as connection:
        for queue in sender.amqp.queues.values():
            queue.bind(connection.default_channel).declare()
    yield sender, client
    client.flushdb()


def waiting(client, queue: str) -> list[str]:
    return [json.loads(raw)["headers"]["task"] for raw in client.lrange(queue, 0, -1)]


@pytest.mark.parametrize(("task", "queue"), [
    ("monitoring.tasks.process_windows", "celery"),
    ("clinops.tasks.worker_heartbeat", "celery"),
    ("monitoring.tasks.sweep_unprocessed_windows", "celery"),
    ("therapy.tasks.evaluate_patient", "therapy"),
    ("therapy.tasks.sweep_unevaluated_reports", "celery"),  # what symptom reports asked for: not behind the bursts
    ("therapy.tasks.evaluate_due_patients", "celery"),  # a cheap query; the evaluations it sends go to "therapy"
])
def test_a_task_is_delivered_to_its_queue_only(broker, task, queue):
    sender, client = broker
    sender.send_task(task, args=[1])
    other = ({"celery", "therapy"} - {queue}).pop()
    assert (waiting(client, queue), waiting(client, other)) == ([task], [])

