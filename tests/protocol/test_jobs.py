"""The queue wire contract: names, request and result messages, claim checks, limits; and
messages that can never succeed told apart from what may later."""

from __future__ import annotations

import json

import pytest

from runtime.errors import BadRequest
from runtime.protocol import jobs
from runtime.protocol.jobs import parse_job
from runtime.scored import ModelInfo, Scored


def test_a_request_with_instances() -> None:
    job = parse_job(b'{"id": "a-1", "instances": [{"x": 1}]}')
    assert (job.id, job.instances, job.instances_blob) == ("a-1", [{"x": 1}], None)


def test_a_request_with_a_claim_check() -> None:
    job = parse_job(b'{"id": "a.2", "instances_blob": "requests/iris/a.2.jsonl"}')
    assert (job.instances, job.instances_blob) == (None, "requests/iris/a.2.jsonl")


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b"not json", "not valid JSON"),
        (b"[1]", "JSON object"),
        (b'{"instances": []}', '"id"'),
        (b'{"id": "../../etc", "instances": []}', '"id"'),
        (b'{"id": 5, "instances": []}', '"id"'),
        (b'{"id": "x"}', "exactly one"),
        (b'{"id": "x", "instances": [], "instances_blob": "a/b"}', "exactly one"),
        (b'{"id": "x", "instances": {"a": 1}}', "must be a list"),
    ],
)
def test_messages_that_can_never_succeed_are_bad_requests(body: bytes, needle: str) -> None:
    with pytest.raises(BadRequest, match=needle):
        parse_job(body)


def test_names_derive_from_the_endpoint_name() -> None:
    assert (jobs.requests_queue("wine_v2"), jobs.results_queue("wine_v2")) == (
        "wine-v2-requests",
        "wine-v2-results",
    )
    assert jobs.queue_function_name("wine_v2") == "wine_v2_queue"
    assert jobs.endpoint_of_queue_function("wine_v2_queue") == "wine_v2"
    assert jobs.endpoint_of_queue_function("wine_v2_predict") is None
    assert jobs.request_blob("iris", "a.1") == "requests/iris/a.1.jsonl"
    assert jobs.result_blob("iris", "a.1") == "results/iris/a.1.json"


def test_a_request_and_a_claim_check_read_back_as_written() -> None:
    inline = parse_job(jobs.encode_request("r-1", [{"x": 1}, {"x": 2}]).encode())
    assert (inline.id, inline.instances, inline.instances_blob) == (
        "r-1",
        [{"x": 1}, {"x": 2}],
        None,
    )
    checked = parse_job(jobs.encode_claim_check("r-2", "requests/iris/r-2.jsonl").encode())
    assert (checked.instances, checked.instances_blob) == (None, "requests/iris/r-2.jsonl")


def test_claim_checked_instances_are_json_lines_and_a_json_list_is_read_too() -> None:
    instances = [{"x": 1}, {"x": [2, 3]}, {"y": "é"}]
    assert jobs.parse_instances(jobs.encode_instances(instances), "c/p") == instances
    assert jobs.parse_instances(b' [{"x": 1}]', "c/p") == [{"x": 1}]
    assert jobs.parse_instances(b'{"x": 1}\n\n{"x": 2}\n', "c/p") == [{"x": 1}, {"x": 2}]
    with pytest.raises(BadRequest, match="neither a JSON list nor JSON Lines"):
        jobs.parse_instances(b'{"x": 1}\nnot json', "c/p")


@pytest.mark.parametrize("ref", ["nocontainer", "/path", "container/", ""])
def test_a_blob_reference_needs_a_container_and_a_path(ref: str) -> None:
    with pytest.raises(BadRequest, match='"instances_blob" must be "container/path"'):
        jobs.split_blob_ref(ref)


def test_results_carry_the_id_predictions_or_their_blob_and_the_model() -> None:
    scored = Scored([b'{"y":1.5}'], ModelInfo("iris", "v1", "a" * 64))
    model = {"name": "iris", "version": "v1", "sha256": "a" * 64}
    assert json.loads(jobs.encode_result("r", scored)) == {
        "id": "r",
        "predictions": [{"y": 1.5}],
        "model": model,
    }
    assert json.loads(jobs.encode_blob_result("r", "results/iris/r.json", scored)) == {
        "id": "r",
        "predictions_blob": "results/iris/r.json",
        "model": model,
    }


def test_an_error_result_carries_both_ids_and_the_error() -> None:
    doc = json.loads(jobs.encode_error(None, "msg-9", BadRequest("no id")))
    assert doc == {
        "id": None,
        "message_id": "msg-9",
        "error": {"type": "BadRequest", "message": "no id"},
    }
    assert jobs.job_id_of(b'{"id": "r-3", "instances": 5}') == "r-3"
    assert jobs.job_id_of(b"[1]") is None and jobs.job_id_of(b"\xff") is None


def test_a_result_fits_a_message_up_to_the_inline_limit() -> None:
    assert jobs.fits_in_message("x" * jobs.INLINE_RESULT_LIMIT)
    assert not jobs.fits_in_message("x" * (jobs.INLINE_RESULT_LIMIT + 1))
    assert not jobs.fits_in_message("é" * (jobs.INLINE_RESULT_LIMIT // 2 + 1))  # bytes, not chars


@pytest.mark.parametrize("job_id", ["a\n", "a\r", "ok\nx", " a"])
def test_an_id_must_match_whole_not_up_to_a_trailing_newline(job_id: str) -> None:
    with pytest.raises(BadRequest, match='"id"'):
        parse_job(json.dumps({"id": job_id, "instances": []}).encode())


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"id": "a", "instances": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "too deeply"),
        (b'{"id": "a", "instances": [' + b"9" * 5000 + b"]}", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
    ],
)
def test_messages_no_parser_could_read_are_bad_requests(body: bytes, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        parse_job(body)
    assert jobs.job_id_of(body) is None


@pytest.mark.parametrize(
    "body",
    [b'{"id": "job-7", "instances": [{"x": NaN}]}', b'{"id": "job-7", "instances": [1e999]}'],
)
def test_a_job_refused_for_non_finite_numbers_still_names_its_id(body: bytes) -> None:
    with pytest.raises(BadRequest, match="not a finite JSON number"):
        jobs.parse_job(body)
    assert jobs.job_id_of(body) == "job-7"


TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def test_a_request_may_carry_the_producers_traceparent() -> None:
    body = jobs.encode_request("t-1", [{"x": 1}], TRACEPARENT).encode()
    assert parse_job(body).traceparent == TRACEPARENT
    assert jobs.traceparent_of(body) == TRACEPARENT
    claim = jobs.encode_claim_check("t-2", "requests/ep/t-2.jsonl", TRACEPARENT).encode()
    assert parse_job(claim).traceparent == TRACEPARENT
    assert "traceparent" not in json.loads(jobs.encode_request("t-3", []))  # only when given


@pytest.mark.parametrize("body", [b'{"id": "t", "instances": [], "traceparent": 7}', b"{nope"])
def test_a_traceparent_that_is_no_string_is_ignored_not_an_error(body: bytes) -> None:
    assert jobs.traceparent_of(body) is None
    if body.startswith(b'{"id"'):
        assert parse_job(body).traceparent is None
