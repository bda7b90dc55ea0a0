#!/bin/sh
# Makes the test clip loadgen's publishers loop (see README.md here): 2 s of H.264 at four
# sizes (the full one and three simulcast layers) and 2 s of Ogg Opus, written next to this
# script. Needs ffmpeg with libx264 and libopus, and ffprobe.
# The committed files were made with Debian 12's ffmpeg 5.1.9 (libx264 0.164.3095, libopus
# 1.3.1); other versions make other (equally usable) bytes.
set -eu

FFMPEG=${FFMPEG:-ffmpeg}
FFPROBE=${FFPROBE:-ffprobe}
cd "$(dirname "$0")"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Video: testsrc2 (colour bars, a rotating bar, moving dots, a clock and frame counter), 60
# pictures at 30 fps. Constrained Baseline level 3.1, one slice a picture, an IDR every 30
# pictures and nowhere else, no B-frames, SPS and PPS before every IDR. x264's own SEI (its
# settings as user data) is dropped, so the only SEI a receiver sees is loadgen's frame stamp.
# One thread, so the output is the same on every run.
#
# video WIDTH HEIGHT KBPS: the 640x360 source scaled to WIDTHxHEIGHT (the full size is not
# scaled at all), at KBPS. The simulcast layers are the same pictures at 2/3, 1/2 and 1/3 of
# the size and of the 500 kb/s, as OBS scales its layers; 1/3 of 640 is 213.3, and x264 wants
# an even width, so it is 212 (2/3 is 426.7, likewise rounded down to 426).
video() {
  if [ "$1x$2" = 640x360 ]; then scale=null; else scale="scale=$1:$2"; fi
  "$FFMPEG" -hide_banner -loglevel error -nostdin -y \
    -f lavfi -i testsrc2=size=640x360:rate=30:duration=2 -vf "$scale" \
    -c:v libx264 -preset medium -profile:v baseline -level:v 3.1 -pix_fmt yuv420p \
    -g 30 -keyint_min 30 -sc_threshold 0 -bf 0 -threads 1 \
    -b:v "$3k" -maxrate "$3k" -bufsize "$3k" -x264-params repeat-headers=1:slices=1 \
    -bsf:v filter_units=remove_types=6 -fflags +bitexact -f h264 "clip-$1x$2-30fps-2s.h264"
}
video 640 360 500
video 426 240 333
video 320 180 250
video 212 120 167

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
for size in 640x360 426x240 320x180 212x120; do
  test "$(count v "clip-$size-30fps-2s.h264")" = 60
done
test "$(count a clip-opus-48k-stereo-2s.opus)" = 100
ls -l clip-*-30fps-2s.h264 clip-opus-48k-stereo-2s.opus
