"""The embedded default's broker (kombu's filesystem transport) under concurrent producers and consumers.

kombu's ``_put`` creates the message file and then writes it, and ``_get`` moves any file whose
name matches and reads it. A consumer that picked a file between the two read it empty: its worker
died with ``JSONDecodeError`` ("Unrecoverable error", seen in ``make run``) and the message was
lost. ``config.celery`` makes the put atomic (written under another name, then renamed).
"""

from __future__ import annotations

import threading
import time
from queue import Empty

import pytest
from kombu import Connection
from kombu.exceptions import ChannelError

from config.celery import app

MESSAGES = 400


@pytest.mark.embedded
def test_concurrent_puts_and_gets_lose_nothing_and_read_no_partial_message(tmp_path):
    options = {
        "data_folder_in": str(tmp_path),
        "data_folder_out": str(tmp_path),
        "control_folder": str(tmp_path / "control"),  # kombu's default is ./control
        "store_processed": False,
    }
    (tmp_path / "control").mkdir()
    assert app.conf.broker_url.startswith("filesystem")  # the transport the embedded default runs on
    received: list[int] = []
    errors: list[BaseException] = []
    done = threading.Event()

    def produce(offset: int) -> None:
        try:
            with Connection("filesystem://", transport_options=options) as conn:
                channel = conn.default_channel
                for n in range(offset, offset + MESSAGES // 2):
                    channel._put("race", {"n": n})  # what publishing a message to the queue ends in
                    time.sleep(0.0005)  # a trickle, as an app publishes: consumers wait on an empty folder
        except Exception as exc:  # noqa: BLE001 (reported by the assertion below)
            errors.append(exc)

    def consume() -> None:
        with Connection("filesystem://", transport_options=options) as conn:
            channel = conn.default_channel
            while not (done.is_set() and len(received) >= MESSAGES):
                try:
                    message = channel._get("race")
                except Empty:
                    pass
                except Exception as exc:  # noqa: BLE001 (a message read while being written: the bug)
                    errors.append(exc)
                else:
                    received.append(message["n"])
                    continue
                if done.is_set() and not any(p.is_alive() for p in producers):
                    break

    producers = [threading.Thread(target=produce, args=(i * MESSAGES // 2,)) for i in range(2)]
    consumers = [threading.Thread(target=consume) for _ in range(2)]
    for thread in consumers + producers:
        thread.start()
    for thread in producers:
        thread.join(60)
    done.set()
    for thread in consumers:
        thread.join(60)
    assert errors == [], f"a consumer read a message being written: {errors[:3]}"
    assert sorted(received) == list(range(MESSAGES)), "every message arrives exactly once"


def test_a_failed_put_raises_the_transports_error(tmp_path):
    missing = str(tmp_path / "missing")
    options = {"data_folder_in": missing, "data_folder_out": missing, "control_folder": missing}
    with Connection("filesystem://", transport_options=options) as conn:
        with pytest.raises(ChannelError):
            conn.default_channel._put("q", {"n": 1})
