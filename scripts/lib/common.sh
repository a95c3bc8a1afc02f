#!/usr/bin/env bash
# Shared helpers for the scripts in scripts/. Source it, do not run it:
#
#   source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
#
# After sourcing, QW_ROOT is the repository root, the current directory is QW_ROOT, and
# QW_CALLER_PWD is the directory the script was started from.

# Errors inside $(...) stop the substitution too (bash >= 4.4).
shopt -s inherit_errexit 2>/dev/null || true

QW_CALLER_PWD="$PWD"
QW_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
export QW_ROOT
cd "$QW_ROOT"

# Messages go to stderr so that functions can print results on stdout.
qw_say() { printf '==> %s\n' "$*" >&2; }
qw_warn() { printf 'warning: %s\n' "$*" >&2; }
qw_die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Runs a command as root: directly when we are root, through sudo when it exists.
qw_as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        qw_die "need root to run '$*' (not root and no sudo); install it by hand"
    fi
}

QW_APT_UPDATED=0

# ensure_packages PKG... : installs the Debian packages that are not installed yet.
ensure_packages() {
    local missing=() pkg
    for pkg in "$@"; do
        if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
            missing+=("$pkg")
        fi
    done
    [ "${#missing[@]}" -eq 0 ] && return 0
    command -v apt-get >/dev/null 2>&1 \
        || qw_die "missing packages (${missing[*]}) and no apt-get on this machine; install them by hand"
    qw_say "installing missing packages: ${missing[*]}"
    if [ "$QW_APT_UPDATED" -eq 0 ]; then
        qw_as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
        QW_APT_UPDATED=1
    fi
    qw_as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
}

# ensure_system_deps : what the Swift build needs from the system (Lua 5.4 headers and
# library, readline, SQLite for the state store, pkg-config to find Lua). Also checks that a
# Swift toolchain is on PATH.
ensure_system_deps() {
    # libcurl: Foundation's networking, which the dashboard's HTTP library brings into the
    # static link of qw-dashboard (qw itself does not link it)
    ensure_packages liblua5.4-dev libreadline-dev libsqlite3-dev pkg-config libcurl4-openssl-dev
    command -v swift >/dev/null 2>&1 \
        || qw_die "no 'swift' on PATH: install a Swift 6 toolchain (https://www.swift.org/install/linux/) and retry"
}

# How an installed (and benchmarked) qw is built: the Swift runtime linked in, and not
# position-independent, which spares the loader ~80,000 relocations and a third of the page
# faults of every start (qw starts once per hook call of an agent); and no $ORIGIN in its
# library path, which the loader would search (a dozen failed opens per library) before the
# system's, though qw ships no library of its own. And libstdc++ linked in as well (see
# qw_static_libstdcxx): half of the loader's relocations at every start were libstdc++'s.
# And no dynamic symbol table of its own (the static Swift runtime asks for -export-dynamic):
# nothing loads into qw that needs its symbols (Lua C modules bind to liblua5.4.so), while
# the runtime's start-up dladdr() and every symbol the loader binds for the shared libraries
# went through its 9,000 entries first; without them `qw -e` starts about a tenth sooner.
# And the metadata of concrete generic types (a [Int: Task] and the like) is got from
# accessor functions, not by demangling the type's name at first use: the demangler checks
# each generic requirement (Int: Hashable) by scanning every protocol conformance in the
# binary, Foundation's included (a tenth of the instructions of `qw -e`, by callgrind).
QW_RELEASE_FLAGS=(--static-swift-stdlib -Xswiftc -Xclang-linker -Xswiftc -no-pie --disable-local-rpath
                  -Xlinker --no-export-dynamic
                  -Xswiftc -Xfrontend -Xswiftc -disable-concrete-type-metadata-mangled-name-accessors)

# qw_static_libstdcxx : prints a folder whose libstdc++.so is a linker script naming the
# static libstdc++.a, so that the -lstdc++ the Swift driver passes links that archive in
# (clang ignores -static-libstdc++ for a swiftc link); prints nothing when there is no
# libstdc++.a, and the build links the shared one as before.
qw_static_libstdcxx() {
    local archive dir="$QW_ROOT/.build/static-libstdc++"
    archive="$(clang -print-file-name=libstdc++.a 2>/dev/null)" || return 0
    case "$archive" in /*) [ -f "$archive" ] || return 0 ;; *) return 0 ;; esac
    mkdir -p "$dir" || return 0
    printf 'INPUT(%s)\n' "$archive" >"$dir/libstdc++.so.new" && mv -f "$dir/libstdc++.so.new" "$dir/libstdc++.so" \
        || return 0
    printf '%s\n' "$dir"
}

# qw_static_sqlite : prints a pkg-config folder through which a build links the system's
# static libsqlite3.a in place of libsqlite3.so; prints nothing when there is no archive (or
# no lua5.4.pc), and the build links the shared one as before. The shared library is bound
# in full at load (it is linked with -z now), 1,600 symbol look-ups at every start of qw:
# about a quarter of `qw -e`'s wall time, and of each `qw hook`. GRDB asks for -lsqlite3 by
# name, and the linker takes the first libsqlite3.so on its search path, which starts with
# the -L of the pkg-config files that the build reads (before any -Xlinker -L). So the
# folder holds a libsqlite3.so that is a linker script naming the archive, and a copy of
# lua5.4.pc (which the CLua target reads) whose Libs put the folder first.
qw_static_sqlite() {
    local archive pc dir="$QW_ROOT/.build/static-sqlite"
    archive="$(pkg-config --variable=libdir sqlite3 2>/dev/null)/libsqlite3.a" || return 0
    pc="$(pkg-config --variable=pcfiledir lua5.4 2>/dev/null)/lua5.4.pc" || return 0
    [ -f "$archive" ] && [ -f "$pc" ] && grep -q '^Libs: -L' "$pc" || return 0
    mkdir -p "$dir/pkgconfig" || return 0
    printf 'INPUT(%s)\n' "$archive" >"$dir/libsqlite3.so.new" && mv -f "$dir/libsqlite3.so.new" "$dir/libsqlite3.so" \
        && sed "s|^Libs: -L|Libs: -L$dir -L|" "$pc" >"$dir/pkgconfig/lua5.4.pc.new" \
        && mv -f "$dir/pkgconfig/lua5.4.pc.new" "$dir/pkgconfig/lua5.4.pc" || return 0
    printf '%s\n' "$dir/pkgconfig"
}

# qw_build CONFIG [EXTRA_SWIFT_BUILD_FLAGS...] : builds qw in CONFIG (debug or release).
# The build's own output goes to stderr; the last (only) line on stdout is the path of the
# built qw binary, so that   QW="$(qw_build debug)"   works.
qw_build() {
    local config="${1:?qw_build: CONFIG (debug or release) is required}"
    shift
    case "$config" in
        debug|release) ;;
        *) qw_die "qw_build: CONFIG must be debug or release, not '$config'" ;;
    esac
    # an installed (release) qw with libstdc++ and SQLite linked in, when the archives are there
    # (a debug build runs in the caller's environment as it is, as scripts/test's does, so
    # that neither makes the other build everything again)
    local -a env=()
    if [ "$config" = release ]; then
        local cxx sqlite
        cxx="$(qw_static_libstdcxx)"
        [ -z "$cxx" ] || set -- "$@" -Xlinker -L"$cxx"
        sqlite="$(qw_static_sqlite)"
        [ -z "$sqlite" ] || env=(PKG_CONFIG_PATH="$sqlite${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}")
    fi
    qw_say "building qw ($config${*:+ $*})"
    env "${env[@]}" swift build -c "$config" "$@" >&2 || qw_die "swift build -c $config${*:+ $*} failed"
    local bin_dir
    bin_dir="$(env "${env[@]}" swift build -c "$config" "$@" --show-bin-path)" \
        || qw_die "swift build -c $config --show-bin-path failed"
    [ -x "$bin_dir/qw" ] || qw_die "build finished but $bin_dir/qw is missing"
    printf '%s\n' "$bin_dir/qw"
}

# The Claude Code CLI the agent tests run: the binary bundled in PyPI's claude-agent-sdk
# wheel, pinned, unpacked once into a cache outside the repository.
QW_CLAUDE_WHEEL_VERSION=0.2.189
QW_CLAUDE_CLI_VERSION=2.1.332

# ensure_claude_cli : prints the path of the cached `claude` binary, downloading the wheel
# (pip download, no dependencies) and unpacking the binary when it is not there yet.
ensure_claude_cli() {
    local cache="${XDG_CACHE_HOME:-$HOME/.cache}/qw/claude-$QW_CLAUDE_CLI_VERSION"
    local bin="$cache/claude"
    if [ -x "$bin" ]; then printf '%s\n' "$bin"; return 0; fi
    command -v python3 >/dev/null 2>&1 || ensure_packages python3 python3-pip
    python3 -m pip --version >/dev/null 2>&1 || ensure_packages python3-pip
    command -v unzip >/dev/null 2>&1 || ensure_packages unzip
    local tmp
    tmp="$(mktemp -d)"
    qw_say "fetching the Claude Code CLI $QW_CLAUDE_CLI_VERSION (claude-agent-sdk $QW_CLAUDE_WHEEL_VERSION)"
    python3 -m pip download --quiet --no-deps --only-binary=:all: --platform manylinux_2_17_x86_64 \
        "claude-agent-sdk==$QW_CLAUDE_WHEEL_VERSION" -d "$tmp" >&2 \
        || { rm -rf "$tmp"; qw_die "pip download of claude-agent-sdk==$QW_CLAUDE_WHEEL_VERSION failed"; }
    unzip -q -o "$tmp"/claude_agent_sdk-*.whl 'claude_agent_sdk/_bundled/claude' -d "$tmp/x" >&2 \
        || { rm -rf "$tmp"; qw_die "the wheel has no claude_agent_sdk/_bundled/claude"; }
    mkdir -p "$cache"
    mv "$tmp/x/claude_agent_sdk/_bundled/claude" "$bin.part" && chmod +x "$bin.part" && mv "$bin.part" "$bin"
    rm -rf "$tmp"
    [ -x "$bin" ] || qw_die "could not unpack the claude binary into $cache"
    printf '%s\n' "$bin"
}
