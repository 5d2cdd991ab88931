#!/usr/bin/env bash
# Install the system packages digestd's test suite drives for real (Debian/Ubuntu), if missing:
# SpamAssassin scores generated digests; PostgreSQL backs the second test run; Postfix's
# smtp-sink/smtp-source serve the crash tests and benchmarks, and a throwaway Postfix instance
# hands real DSNs to digestd's LMTP listener (tests/test_inbound_postfix.py); Chromium renders
# pages and emails. Exim and OpenSMTPD are not needed: their reports are committed fixtures
# (tests/fixtures/bounces/README.md says how they were made).
set -euo pipefail
need=()
command -v spamassassin >/dev/null || need+=(spamassassin)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
{ command -v smtp-sink >/dev/null || [ -x /usr/sbin/smtp-sink ]; } && [ -x /usr/sbin/postfix ] || need+=(postfix)
command -v chromium >/dev/null || need+=(chromium)
command -v openssl >/dev/null || need+=(openssl)  # DKIM and TLS test keys
command -v systemd-analyze >/dev/null || need+=(systemd)
[ -f /usr/share/zoneinfo/tzdata.zi ] || need+=(tzdata)  # the signup page's zone list (web/zones.py)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "missing system packages: ${need[*]} (install them: sudo apt-get install -y ${need[*]})" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
