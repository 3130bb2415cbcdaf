"""Pure tests of the event-stream model, answer parsing and failure classification."""
from __future__ import annotations

import json

import pytest

from orch.adapters.events import MAX_ERRORS, EventStream, classify_failure, describe_item, parse_answer

pytestmark = pytest.mark.unit   # the pure core: no processes, no git


def _line(event: dict) -> str:
    return json.dumps(event)


def _feed(stream: EventStream, *events: dict) -> None:
    for event in events:
        stream.feed_line(_line(event))


THREAD = {'type': 'thread.started', 'thread_id': '01a2-thread'}
STARTED = {'type': 'turn.started'}
USAGE = {'input_tokens': 10, 'cached_input_tokens': 0, 'cache_write_input_tokens': 0,
         'output_tokens': 5, 'reasoning_output_tokens': 0}
COMPLETED = {'type': 'turn.completed', 'usage': USAGE}


def _message(text: str, item_id: str = 'item_0') -> dict:
    return {'type': 'item.completed', 'item': {'id': item_id, 'type': 'agent_message', 'text': text}}


def test_successful_turn_gives_final_answer_thread_and_usage() -> None:
    stream = EventStream()
    _feed(stream, THREAD, STARTED, _message('preamble'), _message('{"status": "done"}', 'item_1'), COMPLETED)
    assert stream.thread_id == '01a2-thread'
    assert stream.turn_completed and stream.turn_failed_message is None
    assert stream.final_answer() == '{"status": "done"}'
    assert stream.messages_this_turn == 2
    assert stream.usage == USAGE
    assert stream.events == 5 and stream.garbage_lines == 0


def test_message_then_turn_failed_gives_no_final_answer() -> None:
    stream = EventStream()
    _feed(stream, THREAD, STARTED, _message('{"status": "done"}'),
          {'type': 'error', 'message': 'Incomplete response returned, reason: max_output_tokens'},
          {'type': 'turn.failed', 'error': {'message': 'Incomplete response returned, reason: max_output_tokens'}})
    assert stream.final_answer() is None
    assert stream.turn_failed_message == 'Incomplete response returned, reason: max_output_tokens'
    assert stream.error_messages == ['Incomplete response returned, reason: max_output_tokens']


def test_message_without_turn_completed_gives_no_final_answer() -> None:
    stream = EventStream()
    _feed(stream, THREAD, STARTED, _message('{"a": 1}'))
    assert stream.final_answer() is None


def test_retried_stream_duplicates_keep_only_the_last_message() -> None:
    stream = EventStream()
    _feed(stream, THREAD, STARTED, _message('partial'),
          {'type': 'error', 'message': 'Reconnecting... 1/5 (stream closed before response.completed)'},
          _message('partial', 'item_1'),
          {'type': 'error', 'message': 'Reconnecting... 2/5 (stream closed before response.completed)'},
          _message('partial', 'item_2'), _message('{"final": true}', 'item_3'), COMPLETED)
    assert stream.final_answer() == '{"final": true}'
    assert len(stream.error_messages) == 2


def test_retried_stream_that_finally_fails_has_no_answer() -> None:
    stream = EventStream()
    _feed(stream, THREAD, STARTED, _message('partial'), _message('partial', 'item_1'),
          {'type': 'turn.failed', 'error': {'message': 'stream closed before response.completed'}})
    assert stream.final_answer() is None


def test_garbage_lines_are_counted_never_raised() -> None:
    stream = EventStream()
    for junk in (b'not json', 'also {not json', b'\xff\xfe\x00', '[1, 2]', '"a string"', '42'):
        assert stream.feed_line(junk) is None
    assert stream.feed_line('') is None and stream.feed_line(b'  \n') is None   # blank lines are not garbage
    assert stream.garbage_lines == 6
    stream.note_garbage()
    assert stream.garbage_lines == 7
    assert stream.feed_line(_line(THREAD)) == THREAD


def test_bytes_and_str_lines_are_both_accepted() -> None:
    stream = EventStream()
    stream.feed_line(_line(THREAD).encode())
    stream.feed_line(_line(STARTED) + '\n')
    assert stream.thread_id == '01a2-thread' and stream.turn_started


def test_error_history_is_bounded() -> None:
    stream = EventStream()
    for i in range(100):
        _feed(stream, {'type': 'error', 'message': f'Reconnecting... {i}'})
    assert len(stream.error_messages) == MAX_ERRORS
    assert stream.error_messages[-1] == 'Reconnecting... 99'


def test_error_items_are_warnings_not_errors() -> None:
    stream = EventStream()
    _feed(stream, {'type': 'item.completed', 'item': {'id': 'item_0', 'type': 'error',
                                                       'message': 'Model metadata for `gpt-5` not found.'}})
    assert stream.warnings == ['Model metadata for `gpt-5` not found.']
    assert stream.error_messages == []


def test_last_activity_follows_meaningful_items() -> None:
    stream = EventStream()
    _feed(stream, THREAD, STARTED)
    assert stream.last_activity is None
    _feed(stream, {'type': 'item.completed', 'item': {'id': 'i0', 'type': 'reasoning', 'text': 'hmm'}})
    assert stream.last_activity == 'thinking'
    _feed(stream, {'type': 'item.started', 'item': {'id': 'i1', 'type': 'command_execution',
                                                     'command': "/bin/bash -lc 'pytest -q'", 'status': 'in_progress'}})
    assert stream.last_activity == "running: /bin/bash -lc 'pytest -q'"
    _feed(stream, {'type': 'item.completed', 'item': {'id': 'i2', 'type': 'file_change', 'status': 'completed',
                                                       'changes': [{'path': '/w/a.py', 'kind': 'update'},
                                                                   {'path': '/w/b.py', 'kind': 'add'}]}})
    assert stream.last_activity == 'edited: /w/a.py (+1 more)'
    _feed(stream, _message('done'))
    assert stream.last_activity == 'message'


def test_describe_item_clips_long_commands_to_one_line() -> None:
    text = describe_item({'type': 'command_execution', 'command': 'echo ' + 'x\n' * 500})
    assert text is not None and '\n' not in text and len(text) <= 160


def test_events_with_unexpected_shapes_do_not_raise() -> None:
    stream = EventStream()
    for event in ({'type': 'item.completed', 'item': None}, {'type': 'item.completed', 'item': {'type': 'file_change'}},
                  {'type': 'turn.failed'}, {'type': 'turn.completed', 'usage': None}, {'no_type': 1},
                  {'type': 'thread.started', 'thread_id': 5}, {'type': 'error'}):
        stream.feed_line(_line(event))
    assert stream.turn_failed_message == 'turn failed'
    assert stream.thread_id is None
    assert stream.final_answer() is None


def test_memory_stays_flat_only_last_message_is_kept() -> None:
    stream = EventStream()
    _feed(stream, STARTED)
    for i in range(1000):
        _feed(stream, _message('m' * 1000 + str(i), f'item_{i}'))
    assert stream.last_message is not None and stream.last_message.endswith('999')
    assert stream.messages_this_turn == 1000
    assert not any(isinstance(v, list) and len(v) > MAX_ERRORS for v in vars(stream).values())


# --- parse_answer -------------------------------------------------------------------------------

def test_parse_plain_json() -> None:
    assert parse_answer('{"status": "done", "n": [1, 2]}') == {'status': 'done', 'n': [1, 2]}
    assert parse_answer('  [1, 2]\n') == [1, 2]


def test_parse_fenced_json_block() -> None:
    text = 'Here is the result:\n```json\n{"status": "done"}\n```\nThanks!'
    assert parse_answer(text) == {'status': 'done'}
    assert parse_answer('```\n{"a": 1}\n```') == {'a': 1}


def test_parse_object_surrounded_by_prose() -> None:
    text = 'I finished the work. {"status": "done", "summary": "use {braces} freely"} Let me know.'
    assert parse_answer(text) == {'status': 'done', 'summary': 'use {braces} freely'}


def test_parse_skips_brace_noise_before_the_object() -> None:
    assert parse_answer('set {x} then {"ok": true}') == {'ok': True}


@pytest.mark.parametrize('text', ['', '   ', 'I could not do it.', '{"unterminated": ', '```json\nnope\n```'])
def test_parse_rejects_non_json_with_clear_message(text: str) -> None:
    with pytest.raises(ValueError, match='JSON'):
        parse_answer(text)


# --- classify_failure ---------------------------------------------------------------------------

@pytest.mark.parametrize('text', [
    'Quota exceeded. Check your plan and billing details.',
    'unexpected status 429 Too Many Requests: {"error": {"type": "insufficient_quota"}}',
    "You've hit your usage limit. Upgrade to Pro or try again later.",
    'Rate limit reached for requests',
    'rate_limit_exceeded',
    '429 Too Many Requests',
    'exceeded retry limit, last status: 429 Too Many Requests',
    'exceeded retry limit, last status: 429',
])
def test_classify_usage_limits_as_deferred(text: str) -> None:
    assert classify_failure(text) == 'deferred'


@pytest.mark.parametrize('text', [
    None, '', 'We’re currently experiencing high demand, which may cause temporary errors.',  # noqa: RUF001 - codex's text
    'exceeded retry limit, last status: 500 Internal Server Error', 'stream closed before response.completed',
    "Codex ran out of room in the model's context window", 'item_4290 failed',
])
def test_classify_other_failures_as_none(text: str | None) -> None:
    assert classify_failure(text) is None


# --- text no encoder likes: lone surrogates become U+FFFD in answers, records stay UTF-8 -------------

def _encodable(text: str | None) -> bool:
    assert text is not None   # the text must have been parsed to be checked at all
    text.encode('utf-8')
    return True


@pytest.mark.parametrize('text', [
    '{"summary": "a \\ud800 b", "\\udcff": ["\\udfff\\ud83d"]}',   # JSON escapes of lone surrogates
    '{"summary": "a \ud800 b", "\udcff": ["\udfff\ud83d"]}',        # the characters themselves
    '```json\n{"summary": "a \\ud800 b", "\\udcff": ["\\udfff\\ud83d"]}\n```',
    'Here: {"summary": "a \\ud800 b", "\\udcff": ["\\udfff\\ud83d"]} done',
])
def test_parse_replaces_lone_surrogates(text: str) -> None:
    assert parse_answer(text) == {'summary': 'a \ufffd b', '\ufffd': ['\ufffd\ufffd']}


def test_parse_keeps_real_pairs_and_controls() -> None:
    # a JSON surrogate pair is one character; control characters are the answer's (JSON escapes them)
    assert parse_answer('{"s": "\\ud83d\\ude00 \\u001b[2J\\u0007"}') == {'s': '\U0001F600 \x1b[2J\x07'}


def test_unparseable_answer_with_surrogates_gives_an_encodable_reason() -> None:
    with pytest.raises(ValueError) as info:
        parse_answer('prose \ud800 \udcff and \x1b[2J')
    assert _encodable(str(info.value)) and 'not JSON' in str(info.value)


def test_event_texts_kept_for_records_are_encodable() -> None:
    stream = EventStream()
    stream.feed_line(b'{"type":"thread.started","thread_id":"t\\ud800"}')
    stream.feed_line(b'{"type":"error","message":"retry \\udcff"}')
    stream.feed_line(b'{"type":"item.completed","item":{"type":"error","message":"warn \\ud800"}}')
    stream.feed_line(b'{"type":"item.started","item":{"type":"command_execution","command":"ls \\udcff"}}')
    stream.feed_line(b'{"type":"turn.failed","error":{"message":"bad \\ud800"}}')
    assert stream.events == 5
    for text in (stream.thread_id, stream.turn_failed_message, stream.last_activity,
                 *stream.error_messages, *stream.warnings):
        assert _encodable(text)
    assert stream.error_messages == ['retry \\xff'] and stream.last_activity == 'running: ls \\xff'
