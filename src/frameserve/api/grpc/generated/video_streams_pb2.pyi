from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class SubscribeRequest(_message.Message):
    __slots__ = ("stream_id",)
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    stream_id: str
    def __init__(self, stream_id: _Optional[str] = ...) -> None: ...

class StreamEvent(_message.Message):
    __slots__ = ("stream_id", "frame", "pts", "record_json", "missed")
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    FRAME_FIELD_NUMBER: _ClassVar[int]
    PTS_FIELD_NUMBER: _ClassVar[int]
    RECORD_JSON_FIELD_NUMBER: _ClassVar[int]
    MISSED_FIELD_NUMBER: _ClassVar[int]
    stream_id: str
    frame: int
    pts: float
    record_json: bytes
    missed: int
    def __init__(self, stream_id: _Optional[str] = ..., frame: _Optional[int] = ..., pts: _Optional[float] = ..., record_json: _Optional[bytes] = ..., missed: _Optional[int] = ...) -> None: ...

class ListStreamsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListStreamsResponse(_message.Message):
    __slots__ = ("stream_json",)
    STREAM_JSON_FIELD_NUMBER: _ClassVar[int]
    stream_json: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, stream_json: _Optional[_Iterable[bytes]] = ...) -> None: ...
