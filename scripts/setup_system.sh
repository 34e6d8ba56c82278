#!/usr/bin/env bash
# Installs the system packages the test-suite uses, when this machine allows it:
#   dataset-fashion-mnist -> /usr/share/datasets/fashion-mnist (the real idx files)
#   chromium              -> headless rendering check of the HTML report
#   chromium-driver       -> /usr/bin/chromedriver: Selenium drives the `reslab serve` page
set -u
need=()
[ -e /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || need+=(dataset-fashion-mnist)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
[ -x /usr/bin/chromedriver ] || need+=(chromium-driver)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != "0" ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "note: cannot install ${need[*]} (needs root and apt-get); tests that need them are skipped."
  exit 0
fi
echo "installing system packages: ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null 2>&1 || true
apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null 2>&1 \
  || apt-get install -y -q "${need[@]}" >/dev/null 2>&1 \
  || echo "note: apt-get could not install ${need[*]}; tests that need them are skipped."
exit 0
