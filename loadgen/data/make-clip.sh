#!/bin/sh
# Makes the test clip loadgen's publishers loop (see README.md here): 2 s of H.264 and 2 s of
# Ogg Opus, written next to this script. Needs ffmpeg with libx264 and libopus, and ffprobe.
# The committed files were made with Debian 12's ffmpeg 5.1.9 (libx264 0.164.3095, libopus
# 1.3.1); other versions make other (equally usable) bytes.
set -eu

FFMPEG=${FFMPEG:-ffmpeg}
FFPROBE=${FFPROBE:-ffprobe}
cd "$(dirname "$0")"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Video: testsrc2 (colour bars, a rotating bar, moving dots, a clock and frame counter), 60
# pictures of 640x360 at 30 fps. Constrained Baseline level 3.1, one slice a picture, an IDR
# every 30 pictures and nowhere else, no B-frames, SPS and PPS before every IDR, ~500 kb/s.
# x264's own SEI (its settings as user data) is dropped, so the only SEI a receiver sees is
# loadgen's frame stamp. One thread, so the output is the same on every run.
"$FFMPEG" -hide_banner -loglevel error -nostdin -y \
  -f lavfi -i testsrc2=size=640x360:rate=30:duration=2 \
  -c:v libx264 -preset medium -profile:v baseline -level:v 3.1 -pix_fmt yuv420p \
  -g 30 -keyint_min 30 -sc_threshold 0 -bf 0 -threads 1 \
  -b:v 500k -maxrate 500k -bufsize 500k -x264-params repeat-headers=1:slices=1 \
  -bsf:v filter_units=remove_types=6 -fflags +bitexact -f h264 clip-640x360-30fps-2s.h264

# Audio: a 440 Hz sine with a 1760 Hz beep at every whole second, stereo 48 kHz, Opus CBR
# 64 kb/s in 20 ms frames. The sine repeats every second, so 4 s are encoded and the packets
# of the second 2 s kept (stream copy from 1.99 s: packet n starts at n * 20 ms - 6.5 ms of
# pre-skip, so packets 100 to 199): they begin in the encoder's steady state, not with its
# start-up delay, and the 100 packets loop without a gap.
"$FFMPEG" -hide_banner -loglevel error -nostdin -y \
  -f lavfi -i sine=frequency=440:beep_factor=4:sample_rate=48000:duration=4 \
  -ac 2 -c:a libopus -b:a 64k -vbr off -application audio -frame_duration 20 \
  -fflags +bitexact -flags:a +bitexact "$tmp/4s.opus"
"$FFMPEG" -hide_banner -loglevel error -nostdin -y -i "$tmp/4s.opus" \
  -c:a copy -ss 1.99 -frames:a 100 -fflags +bitexact clip-opus-48k-stereo-2s.opus

# Both loop every 2 s: 60 pictures (two GOPs, the first an IDR) and 100 Opus packets.
count() {
  "$FFPROBE" -v error -select_streams "$1" -count_packets \
    -show_entries stream=nb_read_packets -of csv=p=0 "$2"
}
test "$(count v clip-640x360-30fps-2s.h264)" = 60
test "$(count a clip-opus-48k-stereo-2s.opus)" = 100
ls -l clip-640x360-30fps-2s.h264 clip-opus-48k-stereo-2s.opus
