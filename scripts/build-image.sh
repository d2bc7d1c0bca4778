#!/usr/bin/env bash
# Build the bids_sclesion container image with podman, without a Docker engine or a registry, and check it.
#
#   bash scripts/build-image.sh [--variant cpu|cuda] [--tag TAG] [--no-check]
#
# 1. Base image: Debian bookworm made with debootstrap and loaded with `podman import` (once; reused).
# 2. `podman build --isolation chroot` of the Dockerfile on that base (a local CPU torch wheel is used when
#    pip knows one, so the build does not need the PyTorch index).
# 3. Checks inside the built image, as its non-root user with its root file system read-only and nothing
#    writable but the bound output and work directories: `bids_sclesion --version`, then the participant and
#    group levels on a tiny synthetic dataset (made by the image's own bids_sclesion-synth), the outputs
#    checked and the input dataset checked unchanged. `podman run --read-only` is used where this machine
#    allows it; otherwise the image is mounted read-only and run with chroot (same file system, same user).
# 4. Build time and image size are printed and written to $BUILD_DIR/image-report.tsv.
# Needs root (podman, debootstrap, mount). Variables: BASE_IMAGE, BUILD_DIR, DEBIAN_MIRROR.
set -euo pipefail
cd "$(dirname "$0")/.."

VARIANT=cpu
TAG=""
CHECK=1
while [ $# -gt 0 ]; do
    case "$1" in
        --variant) VARIANT=$2; shift 2 ;;
        --tag) TAG=$2; shift 2 ;;
        --no-check) CHECK=0; shift ;;
        -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
        *) echo "build-image.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
case "$VARIANT" in cpu|cuda) ;; *) echo "build-image.sh: --variant is cpu or cuda" >&2; exit 2 ;; esac
for tool in podman; do
    command -v "$tool" >/dev/null || { echo "build-image.sh: $tool not found (apt-get install podman)" >&2; exit 3; }
done

VERSION=$(sed -n 's/^__version__ = "\(.*\)"/\1/p' bids_sclesion/__about__.py)
TAG=${TAG:-localhost/bids_sclesion:${VERSION}-${VARIANT}}
BASE=${BASE_IMAGE:-localhost/bids_sclesion-base:bookworm}
BUILD_DIR=${BUILD_DIR:-${TMPDIR:-/tmp}/bids_sclesion-image}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
mkdir -p "$BUILD_DIR"
log() { echo "[build-image] $*"; }

# 1. Base image.
if ! podman image exists "$BASE"; then
    command -v debootstrap >/dev/null || { echo "build-image.sh: debootstrap not found (apt-get install debootstrap)" >&2; exit 3; }
    log "making the base image $BASE with debootstrap ($MIRROR)"
    rm -rf "$BUILD_DIR/rootfs"
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$BUILD_DIR/rootfs" "$MIRROR" \
        > "$BUILD_DIR/debootstrap.log"
    rm -rf "$BUILD_DIR"/rootfs/var/cache/apt/archives/*.deb "$BUILD_DIR"/rootfs/var/lib/apt/lists/*
    tar -C "$BUILD_DIR/rootfs" -c . | podman import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' - "$BASE" >/dev/null
    rm -rf "$BUILD_DIR/rootfs"
fi

# 2. Build.
rm -f docker/wheels/*.whl
if [ "$VARIANT" = cpu ]; then
    for dir in ${PIP_FIND_LINKS:-} /opt/wheels; do
        for wheel in "$dir"/torch-*+cpu-*.whl; do
            [ -f "$wheel" ] && [ ! -f "docker/wheels/$(basename "$wheel")" ] && cp "$wheel" docker/wheels/ &&
                log "using local wheel $(basename "$wheel")"
        done
    done
fi
# pip inside the build trusts what pip trusts here (e.g. a proxy's CA): the bundle is bound, not copied.
cert_args=()
host_cert=${PIP_CERT:-$(pip config get global.cert 2>/dev/null || true)}
if [ -n "$host_cert" ] && [ -f "$host_cert" ]; then
    cert_args=(--volume "$host_cert:/run/host-ca.crt:ro" --build-arg PIP_CERT=/run/host-ca.crt)
fi
log "building $TAG on $BASE"
start=$(date +%s)
podman build --isolation chroot --layers=false --format docker "${cert_args[@]}" \
    --build-arg BASE_IMAGE="$BASE" --build-arg TORCH_VARIANT="$VARIANT" \
    --build-arg VERSION="$VERSION" --build-arg REVISION="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" \
    --build-arg BUILD_DATE="$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
    -t "$TAG" . > "$BUILD_DIR/build.log" 2>&1 || { tail -40 "$BUILD_DIR/build.log"; exit 1; }
build_s=$(( $(date +%s) - start ))
rm -f docker/wheels/*.whl
size=$(podman image inspect --format '{{.Size}}' "$TAG")
log "built $TAG in ${build_s} s, $(( size / 1000000 )) MB (log: $BUILD_DIR/build.log)"
printf 'tag\tvariant\tbuild_seconds\tsize_mb\n%s\t%s\t%s\t%s\n' "$TAG" "$VARIANT" "$build_s" "$(( size / 1000000 ))" \
    > "$BUILD_DIR/image-report.tsv"
[ "$CHECK" = 1 ] || exit 0

# 3. Checks inside the image.
DATA=$BUILD_DIR/check
rm -rf "$DATA"
mkdir -p "$DATA/bids" "$DATA/out" "$DATA/work"
chmod -R a+rwX "$DATA"
UID_RUN=1000
trap 'podman image unmount "$TAG" >/dev/null 2>&1 || true' EXIT

run_podman() {  # run_podman ENTRYPOINT ARGS...: podman run, root read-only, no writable /tmp
    local entry=$1; shift
    podman run --rm --read-only --read-only-tmpfs=false --user $UID_RUN --network none \
        -v "$DATA/bids:/data:ro" -v "$DATA/out:/out" -v "$DATA/work:/work" \
        --entrypoint "$entry" "$TAG" "$@"
}

run_chroot() {  # the same with the image mounted read-only and chroot
    local entry=$1; shift
    local root env
    root=$(podman image mount "$TAG")
    mapfile -t env < <(podman image inspect --format '{{range .Config.Env}}{{println .}}{{end}}' "$TAG" | sed '/^$/d')
    # /data, /out and /work do not exist in the image: bind onto directories it has (/srv, /mnt, /media).
    unshare --mount --fork sh -ec '
        root=$1; data=$2; shift 2
        mount --rbind /dev "$root/dev"; mount -t proc proc "$root/proc"
        mount --bind "$data/bids" "$root/srv"; mount -o remount,bind,ro "$root/srv"
        mount --bind "$data/out" "$root/mnt"; mount --bind "$data/work" "$root/media"
        exec "$@"' sh "$root" "$DATA" \
        chroot --userspec=$UID_RUN:$UID_RUN "$root" /usr/bin/env -i "${env[@]}" "$entry" "$@"
}

if podman run --rm --entrypoint true "$TAG" >/dev/null 2>&1; then
    RUN=run_podman; IN=/data; OUT=/out; WORK=/work; how="podman run --read-only"
else
    RUN=run_chroot; IN=/srv; OUT=/mnt; WORK=/media
    refused=$(podman run --rm --entrypoint true "$TAG" 2>&1 | tail -1 || true)
    how="image mounted read-only + chroot (podman run refused here: ${refused})"
fi
log "checks: $how, user $UID_RUN"
version=$($RUN bids_sclesion --version)
log "bids_sclesion --version: $version"
# The synthetic dataset is written by the image's own generator (into the writable output mount, then moved).
$RUN bids_sclesion-synth "$OUT/synth" --subjects 1 --contrasts T2w --seed 11 >/dev/null
mv "$DATA/out/synth"/* "$DATA/out/synth"/.bidsignore "$DATA/bids/" 2>/dev/null || true
rm -rf "$DATA/out/synth"
before=$(cd "$DATA/bids" && find . -type f -exec sha1sum {} + | sort | sha1sum)
start=$(date +%s)
$RUN bids_sclesion "$IN" "$OUT" participant -w "$WORK" --nprocs 1 --omp-nthreads 2 > "$BUILD_DIR/participant.log" 2>&1 ||
    { tail -30 "$BUILD_DIR/participant.log"; exit 1; }
participant_s=$(( $(date +%s) - start ))
$RUN bids_sclesion "$IN" "$OUT" group -w "$WORK" > "$BUILD_DIR/group.log" 2>&1 || { tail -30 "$BUILD_DIR/group.log"; exit 1; }
after=$(cd "$DATA/bids" && find . -type f -exec sha1sum {} + | sort | sha1sum)
[ "$before" = "$after" ] || { echo "build-image.sh: the input dataset changed" >&2; exit 1; }
expected=(dataset_description.json sub-01.html group_lesions.tsv group.html
          sub-01/anat/sub-01_space-orig_label-lesion_desc-T2w_mask.nii.gz
          sub-01/anat/sub-01_space-orig_label-SC_desc-T2w_mask.nii.gz
          sub-01/anat/sub-01_space-orig_label-lesion_desc-T2w_probseg.nii.gz
          sub-01/anat/sub-01_desc-T2w_lesions.tsv)
for f in "${expected[@]}"; do
    [ -s "$DATA/out/$f" ] || { echo "build-image.sh: missing output $f" >&2; exit 1; }
done
grep -q '"Type": "docker"' "$DATA/out/dataset_description.json"
log "participant level in the image: ${participant_s} s; group level done; ${#expected[@]} expected outputs present"
printf 'tag\tvariant\tbuild_seconds\tsize_mb\tparticipant_seconds\tcheck\n%s\t%s\t%s\t%s\t%s\t%s\n' "$TAG" "$VARIANT" \
    "$build_s" "$(( size / 1000000 ))" "$participant_s" "$how" > "$BUILD_DIR/image-report.tsv"
cat "$BUILD_DIR/image-report.tsv"
