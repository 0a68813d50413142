"""How FFmpeg may open a video file (a job's input, an upload, a media-root stream).

A file is only bytes a client chose, and some FFmpeg demuxers read more than their file: an HLS
or DASH playlist opens every segment URL it lists (other files, ``http://169.254.169.254/``), a
concat list opens the files it names, an SDP file makes FFmpeg bind UDP ports, ``image2`` expands
``%d`` patterns to other files. So a file input is opened with two whitelists enforced by FFmpeg
itself: the ``file`` protocol only (nothing a demuxer opens may be a network URL), and the
demuxers in ``FILE_FORMATS``, which read their one file and nothing else. ``check_file_format``
names the format of the common playlist and list files before FFmpeg sees them, so the client
gets a 400 saying what the file is; FFmpeg's whitelist refuses whatever it does not catch.
"""

from __future__ import annotations

from pathlib import Path

from frameserve.errors import VideoError

FILE_PROTOCOLS = "file"
# Demuxers that read only their own file (names as FFmpeg matches them: any comma-separated
# part of a demuxer's name, e.g. "mov" for "mov,mp4,m4a,3gp,3g2,mj2"). Still-image pipes are
# here so a still image is refused by what it is ("is a still image"), not as an unknown format.
FILE_FORMATS = (
    "mov,mp4,matroska,webm,avi,mpegts,mpegtsraw,flv,live_flv,h264,hevc,m4v,mpegvideo,mpeg,"
    "ogg,asf,ivf,nut,mxf,mjpeg,yuv4mpegpipe,obu,av1,vc1,rawvideo,wav,mp3,aac,"
    "png_pipe,jpeg_pipe,bmp_pipe,webp_pipe,tiff_pipe,gif"
)
FILE_OPTIONS = {"protocol_whitelist": FILE_PROTOCOLS, "format_whitelist": FILE_FORMATS}
_HEAD_BYTES = 4096
# (what the head starts with after blanks, lower case) -> the demuxer FFmpeg would pick
_SIGNATURES = (
    ("#extm3u", "hls (an M3U8 playlist)"),
    ("ffconcat", "concat (an ffconcat list)"),
    ("file ", "concat (a concat list)"),
    ("v=0", "sdp (a session description)"),
    (";ffmetadata", "ffmetadata"),
    ("<?xml", "an XML manifest (dash or another playlist)"),
    ("<mpd", "dash (an MPD manifest)"),
)
_SUFFIXES = {
    ".m3u8": "hls (an M3U8 playlist)",
    ".m3u": "hls (an M3U playlist)",
    ".sdp": "sdp (a session description)",
    ".mpd": "dash (an MPD manifest)",
    ".ffconcat": "concat (an ffconcat list)",
}


def check_file_format(path: Path, shown: str) -> None:
    """``VideoError`` (400) when ``path`` is a playlist, list or manifest that would make FFmpeg
    open other files or URLs; ``shown``: the input as the client named it."""
    kind = _SUFFIXES.get(path.suffix.lower())
    if kind is None:
        try:
            with path.open("rb") as f:
                head = f.read(_HEAD_BYTES)
        except OSError as err:
            raise VideoError(f"{shown}: cannot be read ({err.strerror})") from None
        text = head.lstrip(b"\xef\xbb\xbf \t\r\n").decode("latin-1").lower()
        kind = next((name for sig, name in _SIGNATURES if text.startswith(sig)), None)
    if kind is not None:
        raise VideoError(
            f"{shown}: its format is {kind}, which opens other files or URLs; a file input "
            "must be a video container (mp4, mkv, webm, mov, ts, avi, flv, ...)"
        )


def format_refused(path: Path) -> VideoError:
    """The error for a file whose demuxer is not in ``FILE_FORMATS`` (FFmpeg says EINVAL)."""
    return VideoError(
        f"{path}: not a video FFmpeg can read as a file input: its container format is not "
        "one of the allowed formats (mp4/mov, mkv/webm, avi, ts, flv, raw H.264/HEVC, ...), "
        "and formats that open other files or URLs (playlists, concat, sdp, image "
        "sequences) are refused"
    )
