"""The destination policy of live-stream sources (``video.live.policy``): rules, precedence,
listen options, and FFmpeg connecting to the checked address with a real loopback HTTP server."""

from __future__ import annotations

import http.server
import ipaddress
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av.error
import pytest

from frameserve.errors import ConfigError, InvalidInput
from frameserve.video.frames import Sampling
from frameserve.video.live.policy import SourcePolicy, own_addresses, refuse_listening
from frameserve.video.live.reader import SourceReader
from frameserve.video.live.spec import LiveSettings, LiveSource

ip = ipaddress.ip_address
NO_OWN: frozenset[Any] = frozenset()
LOOPBACK = SourcePolicy.from_flags(["127.0.0.0/8"])


def fixed(*addresses: str) -> Any:
    """A resolver that answers ``addresses`` for any name."""
    return lambda host, port: list(addresses)


@pytest.mark.parametrize(
    ("address", "rule"),
    [
        ("127.0.0.1", "loopback"), ("127.255.0.9", "loopback"), ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"), ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"), ("0.0.0.0", "unspecified"), ("::", "unspecified"),
        ("0.1.2.3", "unspecified"), ("224.0.0.251", "multicast"), ("ff02::1", "multicast"),
        ("255.255.255.255", "broadcast"), ("10.1.2.3", None), ("172.16.0.5", None),
        ("192.168.1.64", None), ("fd12::5", None), ("93.184.216.34", None),
    ],
)  # fmt: skip
def test_the_default_rules(address: str, rule: str | None) -> None:
    got = SourcePolicy().refusal(ip(address), NO_OWN)
    assert (got is None) if rule is None else (got is not None and rule in got), got


def test_the_servers_own_addresses_are_refused_unless_allowed() -> None:
    own = frozenset({ip("10.0.0.7")})
    assert SourcePolicy().refusal(ip("10.0.0.7"), own) == "the server's own address"
    assert SourcePolicy().refusal(ip("10.0.0.8"), own) is None
    assert SourcePolicy.from_flags(["10.0.0.7/32"]).refusal(ip("10.0.0.7"), own) is None
    assert ip("127.0.0.1") in own_addresses() or not own_addresses()  # lo is up where read


def test_deny_wins_over_allow_and_allow_reopens_builtin_refusals() -> None:
    policy = SourcePolicy.from_flags(["127.0.0.0/8", "10.0.0.0/8"], ["127.0.0.2", "10.9.0.0/16"])
    assert policy.refusal(ip("127.0.0.1"), NO_OWN) is None
    assert policy.refusal(ip("127.0.0.2"), NO_OWN) == "--deny-network 127.0.0.2/32"
    assert policy.refusal(ip("10.9.1.1"), NO_OWN) == "--deny-network 10.9.0.0/16"
    assert policy.refusal(ip("169.254.169.254"), NO_OWN) is not None  # not re-opened
    with pytest.raises(ConfigError, match="--deny-network: expected a CIDR"):
        SourcePolicy.from_flags([], ["10.0.0.0/33"])


@pytest.mark.parametrize(
    ("url", "address"),
    [
        ("http://localhost:{port}/", "127.0.0.1"),
        ("http://2130706433:{port}/", "127.0.0.1"),  # decimal
        ("http://0x7f.1:{port}/", "127.0.0.1"),  # hex, short form
        ("http://017700000001:{port}/", "127.0.0.1"),  # octal
        ("http://127.1:{port}/", "127.0.0.1"),
        ("http://[::1]:{port}/", "::1"),
        ("http://[::ffff:127.0.0.1]:{port}/", "::ffff:7f00:1"),
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254"),
        ("rtsp://admin:hunter2@localhost:{port}/live", "127.0.0.1"),
    ],
)
def test_names_and_numeric_forms_are_checked_after_resolution(url: str, address: str) -> None:
    """The real resolver: what FFmpeg would connect to is what is checked."""
    url = url.format(port=8000)
    with pytest.raises(InvalidInput) as caught:
        SourcePolicy().check(url)
    message = caught.value.message
    assert f"resolves to {address}, which the source policy refuses" in message
    assert "hunter2" not in message
    if "169.254" in url:
        assert "link-local (cloud metadata)" in message


def test_every_resolved_address_must_pass() -> None:
    with pytest.raises(InvalidInput, match="resolves to 127.0.0.1"):
        SourcePolicy().check("rtsp://cam.example/live", fixed("10.0.0.5", "127.0.0.1"), NO_OWN)


def test_the_url_is_rewritten_to_the_checked_address() -> None:
    d = SourcePolicy().check("http://u:p@cam.lan:8080/v?x=1", fixed("10.0.0.5"), NO_OWN)
    assert d.url == "http://u:p@10.0.0.5:8080/v?x=1" and d.address == "10.0.0.5"
    assert d.options == {
        "max_redirects": "0", "http_proxy": "", "headers": "Host: cam.lan:8080\r\n",
    }  # fmt: skip
    d = SourcePolicy().check("rtsp://cam.lan/live", fixed("fd00::5"), NO_OWN)
    assert d.url == "rtsp://[fd00::5]/live" and d.options == {"rtsp_transport": "tcp"}
    d = SourcePolicy(allow_udp=True).check("rtsp://cam.lan/live", fixed("10.0.0.5"), NO_OWN)
    assert d.options == {}
    d = SourcePolicy().check("https://cam.lan/s.ts", fixed("10.0.0.5"), NO_OWN)
    assert d.url == "https://cam.lan/s.ts"  # TLS keeps the name for SNI
    assert d.options["max_redirects"] == "0"


LISTENING = [
    "tcp://10.0.0.5:5000?listen=1", "tcp://10.0.0.5:5000?listen", "tcp://10.0.0.5:5000?-listen",
    "tcp://10.0.0.5:5000#?listen=1", "tcp://10.0.0.5:5000/x#frag?listen=2",
    "tcp://10.0.0.5:5000?timeout=1&listen_timeout=5", "http://10.0.0.5/?listen=1",
    "rtsp://10.0.0.5/live?rtsp_flags=listen", "rtsp://10.0.0.5/live#rtsp_flags=filter_src+listen",
    "srt://10.0.0.5:9000?mode=listener", "srt://10.0.0.5:9000?mode=rendezvous",
    "tcp://10.0.0.5:5000?%6Cisten=1", "tcp://10.0.0.5:5000;listen=1",
]  # fmt: skip


@pytest.mark.parametrize("url", LISTENING)
def test_listen_options_anywhere_are_refused(url: str) -> None:
    with pytest.raises(InvalidInput, match="it does not listen for them"):
        SourcePolicy(allow_udp=True).check(url, fixed("10.0.0.5"), NO_OWN)


def test_udp_sources_need_the_flag() -> None:
    with pytest.raises(InvalidInput, match="only with --allow-udp-sources"):
        refuse_listening("udp://239.1.1.1:5004", allow_udp=False)
    refuse_listening("udp://239.1.1.1:5004", allow_udp=True)
    policy = SourcePolicy.from_flags(["239.0.0.0/8"], allow_udp=True)
    assert policy.check("udp://239.1.1.1:5004", fixed("239.1.1.1"), NO_OWN).address == "239.1.1.1"


# -- FFmpeg against a real loopback HTTP server ---------------------------------------------------
class _Recorder(http.server.BaseHTTPRequestHandler):
    seen: list[tuple[str, str | None]]
    redirect: str | None = None

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.seen.append((self.path, self.headers.get("Host")))
        if self.redirect:
            self.send_response(302)
            self.send_header("Location", self.redirect)
        else:
            self.send_response(404)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def http_server() -> Iterator[Any]:
    """``start(redirect=None) -> (port, requests seen)``: loopback HTTP servers."""
    started: list[http.server.ThreadingHTTPServer] = []

    def start(redirect: str | None = None) -> tuple[int, list[tuple[str, str | None]]]:
        seen: list[tuple[str, str | None]] = []
        handler = type("H", (_Recorder,), {"seen": seen, "redirect": redirect})
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        started.append(server)
        return server.server_port, seen

    yield start
    for server in started:
        server.shutdown()
        server.server_close()


def reader(url: str, policy: SourcePolicy, tmp_path: Path) -> SourceReader:
    settings = LiveSettings(media_root=tmp_path, open_timeout_s=3.0, policy=policy)
    return SourceReader(LiveSource(url), settings, Sampling("all"), None)


def test_ffmpeg_never_reaches_a_refused_address(http_server: Any, tmp_path: Path) -> None:
    port, seen = http_server()
    for url in (f"http://localhost:{port}/", f"http://2130706433:{port}/",
                f"http://0x7f.1:{port}/", f"http://127.0.0.1:{port}/"):  # fmt: skip
        with pytest.raises(InvalidInput, match="loopback"):
            reader(url, SourcePolicy(), tmp_path).open()
    assert seen == []


def test_allowed_ffmpeg_connects_by_address_with_the_host_header(
    http_server: Any, tmp_path: Path
) -> None:
    port, seen = http_server()
    with pytest.raises(av.error.HTTPNotFoundError):
        reader(f"http://localhost:{port}/cam", LOOPBACK, tmp_path).open()
    assert seen == [("/cam", f"localhost:{port}")]


def test_a_redirect_is_not_followed(http_server: Any, tmp_path: Path) -> None:
    target_port, target_seen = http_server()
    port, seen = http_server(redirect=f"http://127.0.0.1:{target_port}/metadata")
    with pytest.raises(av.error.FFmpegError):
        reader(f"http://127.0.0.1:{port}/", LOOPBACK, tmp_path).open()
    assert len(seen) == 1 and target_seen == []


def test_an_hls_playlist_source_is_refused_before_its_segments(
    http_server: Any, tmp_path: Path
) -> None:
    """A playlist's segment URLs could point anywhere: the HLS demuxer is not allowed for
    network sources, so FFmpeg fetches the playlist and opens nothing it lists."""
    segment_port, segment_seen = http_server()
    playlist = (
        f"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\n"
        f"http://127.0.0.1:{segment_port}/seg.ts\n#EXT-X-ENDLIST\n"
    )

    class Playlist(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            body = playlist.encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/vnd.apple.mpegurl")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Playlist)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/live.m3u8"
        with pytest.raises(av.error.FFmpegError):
            reader(url, LOOPBACK, tmp_path).open()
    finally:
        server.shutdown()
        server.server_close()
    assert segment_seen == []
