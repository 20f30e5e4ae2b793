#!/usr/bin/env bash
# Build the C preprocessing extension under AddressSanitizer + UndefinedBehaviorSanitizer and
# run the tests that drive it (preprocessing, images, the mutation corpus, the property test).
# A developer check, not part of CI (it needs gcc and a libasan; it takes a few minutes).
#   usage: scripts/asan_check.sh [extra pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r sdk/vlmguard "$work/vlmguard"
rm -f "$work"/vlmguard/_native*.so
ext=$(python -c "import sysconfig; print(sysconfig.get_config_var('EXT_SUFFIX'))")
inc=$(python -c "import sysconfig; print(sysconfig.get_paths()['include'])")
gcc -shared -fPIC -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined \
    -fno-sanitize-recover=undefined -std=c99 -Wall -Wextra -I"$inc" \
    bindings/native.c -o "$work/vlmguard/_native$ext"
libasan=$(gcc -print-file-name=libasan.so)
libubsan=$(gcc -print-file-name=libubsan.so)
export PYTHONPATH="$work:$root"
# an editable install (scikit-build-core) redirects `import vlmguard` to its own build;
# drop that finder so the copy with the sanitized extension is the one imported
cat > "$work/sitecustomize.py" <<'PY'
import sys
sys.meta_path[:] = [f for f in sys.meta_path if "ScikitBuild" not in type(f).__name__]
PY
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:halt_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
# the extension must be the sanitized build, not an installed one
LD_PRELOAD="$libasan $libubsan" python - "$work" <<'PY'
import sys, vlmguard.preprocess as p
assert p.NATIVE and p._native.__file__.startswith(sys.argv[1]), p._native
print("sanitized extension:", p._native.__file__)
PY
LD_PRELOAD="$libasan $libubsan" python -m pytest -q -p no:cacheprovider \
    tests/test_preprocess.py tests/test_image.py tests/test_properties.py \
    tests/test_failclosed.py -k "not memory and not cli" "$@"
echo "ASan/UBSan: clean"
