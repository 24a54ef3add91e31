"""What every adapter of a port must do. Subclassed per adapter, so one suite
checks the in-memory fakes, moto, LocalStack and Azurite alike."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from shared.errors import ObjectMissing
from shared.events import ObjectRef
from shared.ports import FinishedEntryImmutable, LineageRecord, LineageStore, ObjectStore


class ObjectStoreContract:
    """Needs fixtures ``store`` (an ObjectStore) and ``container`` (existing, empty enough)."""

    def ref(self, container: str, name: str = "") -> ObjectRef:
        return ObjectRef(container=container, key=f"datasets/t/{name or uuid.uuid4().hex}.csv")

    def test_put_head_and_stream(self, store: ObjectStore, container: str) -> None:
        ref = self.ref(container)
        data = bytes(range(256)) * 5000  # 1.28 MB: more than one chunk
        store.put_bytes(ref, data, {"dhow_upload_id": "u1"})
        info = store.head(ref)
        assert info.size == len(data)
        assert info.etag
        assert info.metadata.get("dhow_upload_id") == "u1"
        chunks = list(store.iter_chunks(ref, chunk_size=256 * 1024))
        assert b"".join(chunks) == data
        assert max(len(c) for c in chunks) <= 256 * 1024
        assert store.read_prefix(ref, 4) == data[:4]

    def test_empty_object(self, store: ObjectStore, container: str) -> None:
        ref = self.ref(container)
        store.put_bytes(ref, b"")
        assert store.head(ref).size == 0
        assert store.read_prefix(ref, 512) == b""

    def test_missing_object(self, store: ObjectStore, container: str) -> None:
        ref = self.ref(container, "never-written")
        with pytest.raises(ObjectMissing):
            store.head(ref)
        assert not store.exists(ref)

    def test_copy_keeps_bytes_and_sets_metadata(self, store: ObjectStore, container: str) -> None:
        src, dst = self.ref(container), self.ref(container)
        store.put_bytes(src, b"a,b\n1,2\n")
        store.copy(src, dst, {"sha256": "abc"})
        assert b"".join(store.iter_chunks(dst)) == b"a,b\n1,2\n"
        assert store.head(dst).metadata.get("sha256") == "abc"
        assert store.exists(src)

    def test_delete_and_download(self, store: ObjectStore, container: str, tmp_path: Path) -> None:
        ref = self.ref(container)
        store.put_bytes(ref, b"abc" * 1000)
        assert store.download(ref, tmp_path / "x") == 3000
        assert (tmp_path / "x").read_bytes() == b"abc" * 1000
        store.delete(ref)
        assert not store.exists(ref)
        store.delete(ref)  # already gone: no error

    def test_list_keys_in_order_under_prefix(self, store: ObjectStore, container: str) -> None:
        base = f"captures/{uuid.uuid4().hex}/"
        for key in ("2026/11/02/b.jsonl", "2026/11/01/a.jsonl", "2026/11/02/a.jsonl"):
            store.put_bytes(ObjectRef(container=container, key=base + key), b"{}")
        store.put_bytes(ObjectRef(container=container, key=base.rstrip("/") + "-other/x"), b"")
        assert list(store.list_keys(container, base)) == [
            base + "2026/11/01/a.jsonl",
            base + "2026/11/02/a.jsonl",
            base + "2026/11/02/b.jsonl",
        ]
        assert list(store.list_keys(container, base + "2027/")) == []

    def test_upload_file(self, store: ObjectStore, container: str, tmp_path: Path) -> None:
        path = tmp_path / "f.csv"
        path.write_bytes(b"x,y\n" * 1000)
        ref = self.ref(container)
        store.upload_file(ref, path, {"dhow_uploaded_by": "amal"})
        assert store.head(ref).size == 4000
        assert store.head(ref).metadata.get("dhow_uploaded_by") == "amal"


class LineageStoreContract:
    """Needs fixture ``lineage`` (a LineageStore on an existing table)."""

    def record(self, dataset: str, **kw: object) -> LineageRecord:
        base: dict[str, object] = {
            "dataset": dataset,
            "record_id": f"ingest:{uuid.uuid4().hex}",
            "kind": "ingest",
            "status": "claimed",
            "attributes": {"size_bytes": 10, "uploader": None},
        }
        return LineageRecord.model_validate({**base, **kw})

    def test_put_if_absent_is_conditional(self, lineage: LineageStore) -> None:
        ds = f"d{uuid.uuid4().hex[:8]}"
        row = self.record(ds)
        assert lineage.put_if_absent(row) is True
        assert lineage.put_if_absent(row.model_copy(update={"status": "other"})) is False
        got = lineage.get(ds, row.record_id)
        assert got is not None
        assert got.status == "claimed"
        assert got.attributes == {"size_bytes": 10, "uploader": None}
        assert got.created_at == row.created_at

    def test_replace_compares_revisions(self, lineage: LineageStore) -> None:
        ds = f"d{uuid.uuid4().hex[:8]}"
        row = self.record(ds)
        lineage.put_if_absent(row)
        assert lineage.replace(row.model_copy(update={"status": "ingested"}), 0) is True
        # A second writer holding the old revision loses.
        assert lineage.replace(row.model_copy(update={"status": "lost"}), 0) is False
        got = lineage.get(ds, row.record_id)
        assert got is not None
        assert (got.status, got.revision) == ("ingested", 1)

    def test_replace_of_missing_row_fails(self, lineage: LineageStore) -> None:
        assert lineage.replace(self.record("nobody"), 0) is False

    def test_list_is_per_dataset_and_oldest_first(self, lineage: LineageStore) -> None:
        ds = f"d{uuid.uuid4().hex[:8]}"
        rows = [self.record(ds) for _ in range(3)]
        for r in reversed(rows):
            lineage.put_if_absent(r)
        lineage.put_if_absent(self.record(f"other{ds}"))
        assert [r.record_id for r in lineage.list(ds)] == [r.record_id for r in rows]
        assert lineage.get(ds, "ingest:none") is None

    def test_a_finished_row_is_never_written_over(self, lineage: LineageStore) -> None:
        """The audit trail is append-only: a row in its kind's finished status refuses a
        replace, even by a writer holding its current revision; nothing is written."""
        ds = f"d{uuid.uuid4().hex[:8]}"
        row = self.record(ds)
        lineage.put_if_absent(row)
        assert lineage.replace(row.model_copy(update={"status": "ingested"}), 0) is True
        with pytest.raises(FinishedEntryImmutable):
            lineage.replace(row.model_copy(update={"status": "claimed"}), 1)
        with pytest.raises(FinishedEntryImmutable):
            lineage.replace(row.model_copy(update={"attributes": {"size_bytes": 1}}), 1)
        got = lineage.get(ds, row.record_id)
        assert got is not None
        assert (got.status, got.revision, got.attributes["size_bytes"]) == ("ingested", 1, 10)
        # A writer holding an older revision lost a race, as before: no error.
        assert lineage.replace(row.model_copy(update={"status": "claimed"}), 0) is False

    def test_a_row_keeps_its_kind(self, lineage: LineageStore) -> None:
        ds = f"d{uuid.uuid4().hex[:8]}"
        row = self.record(ds)
        lineage.put_if_absent(row)
        with pytest.raises(FinishedEntryImmutable):
            lineage.replace(row.model_copy(update={"kind": "serving"}), 0)
        got = lineage.get(ds, row.record_id)
        assert got is not None
        assert (got.kind, got.revision) == ("ingest", 0)

    def test_state_rows_move_on_whatever_their_status(self, lineage: LineageStore) -> None:
        ds = f"d{uuid.uuid4().hex[:8]}"
        row = self.record(ds, kind="serving", status="Idle", record_id="serving:router")
        lineage.put_if_absent(row)
        for i, status in enumerate(("InProgress", "Succeeded", "InProgress")):
            assert lineage.replace(row.model_copy(update={"status": status}), i) is True

    def test_scan_pages_through_every_dataset_once(self, lineage: LineageStore) -> None:
        tag = uuid.uuid4().hex[:8]
        made = {(f"s{tag}{i % 3}", self.record(f"s{tag}{i % 3}").record_id) for i in range(7)}
        for ds, rid in made:
            lineage.put_if_absent(self.record(ds, record_id=rid))
        seen: list[tuple[str, str]] = []
        cursor: str | None = None
        pages = 0
        while True:
            page = lineage.scan(cursor, page_size=2)
            assert len(page.records) <= 2
            seen += [(r.dataset, r.record_id) for r in page.records]
            pages += 1
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        mine = [k for k in seen if k[0].startswith(f"s{tag}")]
        assert sorted(mine) == sorted(made)  # every row, none twice
        assert pages >= 4
