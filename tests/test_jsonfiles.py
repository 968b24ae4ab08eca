import json

import pytest

from streamo.jsonfiles import InvalidRecord, RecordWriter, atomic_write, iter_records, parse_record

RECORDS = [{"a": 1, "text": "é"}, {"a": 2, "text": "x"}]


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("list.json", json.dumps(RECORDS, indent=2)),
        ("lines.jsonl", "\n".join(json.dumps(r) for r in RECORDS) + "\n\n"),
        ("lines.json", "\n".join(json.dumps(r) for r in RECORDS)),
    ],
)
def test_reads_lists_and_lines(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    assert list(iter_records(path)) == RECORDS
    assert [parse_record(item) for item in iter_records(path, lazy=True)] == RECORDS


def test_reads_single_pretty_object(tmp_path):
    path = tmp_path / "one.json"
    path.write_text(json.dumps(RECORDS[0], indent=2))
    assert list(iter_records(path)) == [RECORDS[0]]


def test_bad_line_is_reported_with_its_number(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"a": 1}\n{"a": \n')
    items = list(iter_records(path, lazy=True))
    assert parse_record(items[0]) == {"a": 1}
    with pytest.raises(InvalidRecord, match="line 2"):
        parse_record(items[1])


def test_not_json_at_all(tmp_path):
    path = tmp_path / "x.json"
    path.write_text("hello")
    with pytest.raises(InvalidRecord):
        list(iter_records(path))


@pytest.mark.parametrize("name", ["out.json", "out.jsonl"])
def test_writer_round_trip_and_json_matches_indent_2(tmp_path, name):
    path = tmp_path / name
    with RecordWriter(path) as writer:
        for record in RECORDS:
            writer.write(record)
    assert list(iter_records(path)) == RECORDS
    if name.endswith(".json"):
        assert path.read_text(encoding="utf-8") == json.dumps(RECORDS, indent=2, ensure_ascii=False)


def test_empty_json_output_is_a_valid_list(tmp_path):
    path = tmp_path / "empty.json"
    with RecordWriter(path):
        pass
    assert json.loads(path.read_text()) == []


def test_failed_write_leaves_no_file_and_keeps_old(tmp_path):
    path = tmp_path / "out.jsonl"
    path.write_text("old")
    with pytest.raises(RuntimeError):
        with RecordWriter(path) as writer:
            writer.write({"a": 1})
            raise RuntimeError("crash")
    assert path.read_text() == "old"
    assert list(tmp_path.iterdir()) == [path]
    with pytest.raises(RuntimeError):
        with atomic_write(tmp_path / "new.txt", "w") as handle:
            handle.write("partial")
            raise RuntimeError("crash")
    assert not (tmp_path / "new.txt").exists()
