#!/usr/bin/env bash
# Build the OmniModel sandbox image without any image registry:
# debootstrap a Debian bookworm root filesystem with the toolchain, then `docker import` it.
# Usage: sandbox/build_image.sh [--print-tag]
# Env: OMNIMODEL_CACHE (rootfs tarball cache; default ~/.cache/omnimodel),
#      OMNIMODEL_DEBIAN_MIRROR (default http://deb.debian.org/debian).
# Idempotent: does nothing when the tag for the current recipe hash already exists.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${OMNIMODEL_CACHE:-$HOME/.cache/omnimodel}/sandbox"
mirror="${OMNIMODEL_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
suite=bookworm

# The recipe hash covers everything that shapes the image: this script, the package list and
# the Dockerfile (which must produce the same image on machines that can pull).
recipe_hash="$(cat "$here/build_image.sh" "$here/packages.txt" "$here/Dockerfile" | sha256sum | cut -c1-12)"
tag="omnimodel-sandbox:${recipe_hash}"

if [[ "${1:-}" == "--print-tag" ]]; then
    echo "$tag"
    exit 0
fi

if docker image inspect "$tag" >/dev/null 2>&1; then
    echo "sandbox image $tag already present"
    exit 0
fi

packages="$(grep -v '^#' "$here/packages.txt" | grep -v '^$' | paste -sd, -)"
tarball="$cache/rootfs-${recipe_hash}.tar"
mkdir -p "$cache"

if [[ ! -s "$tarball" ]]; then
    command -v debootstrap >/dev/null || { echo "debootstrap missing: apt-get install -y debootstrap" >&2; exit 1; }
    root="$(mktemp -d "$cache/rootfs.XXXXXX")"
    trap 'rm -rf "$root"' EXIT
    echo "debootstrap $suite into $root (packages: $packages)"
    debootstrap --variant=minbase --include="$packages" "$suite" "$root" "$mirror"
    # Same user layout as the Dockerfile: an unprivileged user 1000 that owns nothing.
    chroot "$root" /usr/sbin/groupadd -g 1000 omni
    chroot "$root" /usr/sbin/useradd -u 1000 -g 1000 -M -d /tmp -s /bin/sh omni
    # Host paths are mounted at the same path inside; a root host user's cache lives under /root.
    chmod 0755 "$root/root"
    # Trim what a compiler sandbox never needs (keeps the image and the import small).
    chroot "$root" apt-get clean
    rm -rf "$root"/var/lib/apt/lists/* "$root"/usr/share/doc/* "$root"/usr/share/man/* \
        "$root"/usr/share/locale/* "$root"/var/cache/debconf/*-old "$root"/var/log/*
    tar -C "$root" --numeric-owner -cf "$tarball.tmp" .
    mv "$tarball.tmp" "$tarball"
    rm -rf "$root"
    trap - EXIT
fi

echo "importing $tarball as $tag"
docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'USER 1000:1000' \
    --change 'WORKDIR /tmp' \
    --change 'CMD ["/bin/sh"]' \
    --change "LABEL org.omnimodel.sandbox.recipe=${recipe_hash}" \
    "$tarball" "$tag"
echo "built $tag"
