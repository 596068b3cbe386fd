"""The admin of idempotency records: filters, search, preview, bulk actions, no full-table count."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from idempotency.admin import CappedCountPaginator
from idempotency.models import IdempotencyRecord

pytestmark = pytest.mark.django_db

URL = "/admin/idempotency/idempotencyrecord/"


@pytest.fixture
def records():
    now = timezone.now()
    rows = [
        IdempotencyRecord(
            scope="user:1 POST transfers/",
            key="http-key",
            fingerprint="f",
            state="completed",
            response_status=201,
            response_headers=[["Content-Type", "application/json"]],
            response_body=b'{"x": "<script>alert(1)</script>' + b"y" * 500 + b'"}',
            created_at=now - timedelta(minutes=5),
            completed_at=now,
            expires_at=now + timedelta(days=1),
            replay_count=3,
        ),
        IdempotencyRecord(
            scope="fn:app.tasks.transfer",
            key="transfer:1",
            fingerprint="f",
            state="completed",
            result={"ok": True},
            created_at=now - timedelta(days=10),
            completed_at=now,
            expires_at=now - timedelta(minutes=1),
        ),
        IdempotencyRecord(
            scope="fn:app.tasks.transfer",
            key="transfer:2",
            fingerprint="f",
            owner="host:1:abc",
            fencing_token=1,
            locked_until=now + timedelta(seconds=30),
            created_at=now,
            expires_at=now + timedelta(days=1),
        ),
    ]
    return IdempotencyRecord.objects.bulk_create(rows)


def test_changelist_with_filters_and_search(admin_client_, records):
    response = admin_client_.get(URL)
    assert response.status_code == 200
    content = response.content.decode()
    assert "http-key" in content and "transfer:1" in content
    for query, shown, hidden in [
        ("?state__exact=in_progress", "transfer:2", "http-key"),
        ("?q=http", "http-key", "transfer:2"),
        ("?scope=fn:app.tasks.transfer", "transfer:2", "http-key"),
        ("?scope=fn:", "transfer:2", "http-key"),
        ("?scope=user:", "http-key", "transfer:2"),
        ("?age=older", "transfer:1", "http-key"),
        ("?age=1h", "http-key", "transfer:1"),
        ("?age=expired", "transfer:1", "http-key"),
    ]:
        page = admin_client_.get(URL + query).content.decode()
        assert shown in page and hidden not in page, query


def test_changelist_never_counts_the_whole_table(admin_client_, records):
    with CaptureQueriesContext(connection) as queries:
        assert admin_client_.get(URL).status_code == 200
    counts = [q["sql"] for q in queries.captured_queries if "COUNT(" in q["sql"].upper()]
    assert counts, "the paginator counts"
    for sql in counts:
        assert "LIMIT" in sql.upper(), f"every count is bounded: {sql}"


def test_search_is_a_key_prefix(admin_client_, records):
    page = admin_client_.get(URL + "?q=transfer").content.decode()
    assert "transfer:1" in page and "transfer:2" in page and "http-key" not in page
    assert "transfer:1" not in admin_client_.get(URL + "?q=ransfer").content.decode(), "a prefix, not a substring"


def test_date_hierarchy_lists_periods_between_first_and_last_record(admin_client_):
    day = timezone.now().replace(year=2025, month=3, day=10, hour=12)
    IdempotencyRecord.objects.bulk_create(
        IdempotencyRecord(
            scope="s", key=f"d{offset}", fingerprint="f", created_at=day + timedelta(days=offset), expires_at=day
        )
        for offset in (0, 2)
    )
    with CaptureQueriesContext(connection) as queries:
        page = admin_client_.get(URL).content.decode()
    assert "March 10" in page and "March 11" in page and "March 12" in page
    assert not [q for q in queries.captured_queries if "DISTINCT" in q["sql"].upper()], "no DISTINCT scan"
    months = admin_client_.get(URL + "?created_at__year=2025").content.decode()
    assert "March 2025" in months


def test_capped_paginator():
    paginator = CappedCountPaginator(IdempotencyRecord.objects.order_by("pk"), 5)
    paginator.COUNT_LIMIT = 2
    IdempotencyRecord.objects.bulk_create(
        IdempotencyRecord(scope="s", key=str(i), fingerprint="f", created_at=timezone.now(), expires_at=timezone.now())
        for i in range(4)
    )
    assert paginator.count == 2


def test_detail_shows_an_escaped_truncated_outcome_preview(admin_client_, records):
    page = admin_client_.get(f"{URL}{records[0].pk}/change/").content.decode()
    assert "&lt;script&gt;" in page and "<script>alert(1)" not in page
    assert "y" * 300 not in page, "the preview is truncated"
    assert "{&quot;ok&quot;: true}" in admin_client_.get(f"{URL}{records[1].pk}/change/").content.decode()


def test_expire_and_delete_actions_report(admin_client_, records):
    ids = [str(records[0].pk), str(records[2].pk)]
    response = admin_client_.post(URL, {"action": "expire_records", "_selected_action": ids}, follow=True)
    assert "Expired 2 idempotency records." in response.content.decode()
    assert IdempotencyRecord.objects.filter(expires_at__lte=timezone.now()).count() == 3
    response = admin_client_.post(URL, {"action": "delete_records", "_selected_action": ids}, follow=True)
    assert "Deleted 2 idempotency records." in response.content.decode()
    assert list(IdempotencyRecord.objects.values_list("key", flat=True)) == ["transfer:1"]


def test_records_cannot_be_added_by_hand(admin_client_):
    assert admin_client_.get(URL + "add/").status_code == 403
