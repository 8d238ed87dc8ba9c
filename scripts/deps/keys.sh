#!/usr/bin/env bash
# keys: SoftHSM2 is the PKCS#11 token of keys/tests/softhsm.rs and the CLI
# test; OpenSC's pkcs11-tool helps inspecting tokens by hand.
exec "$(dirname "$0")/apt.sh" softhsm2 opensc
