# The test command is `bash scripts/test.sh` (what .ci/run runs). These
# targets run the long versions of the reliability scenarios
# (RELIABILITY.md); each short version already runs in the test command.

FUZZTIME ?= 10m

.PHONY: test reliability fuzz kills

test:
	bash scripts/test.sh

# Every fuzz target for FUZZTIME, one after the other.
fuzz:
	go test -run XXX -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) ./internal/manifest
	go test -run XXX -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) ./internal/spec
	go test -run XXX -fuzz '^FuzzProcfile$$' -fuzztime $(FUZZTIME) ./internal/spec
	go test -run XXX -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) ./internal/desired
	go test -run XXX -fuzz '^FuzzUnpack$$' -fuzztime $(FUZZTIME) ./internal/artifact
	go test -run XXX -fuzz '^FuzzEnvFile$$' -fuzztime $(FUZZTIME) ./internal/agent
	go test -run XXX -fuzz '^FuzzAPI$$' -fuzztime $(FUZZTIME) ./internal/server

# 200 agent kills, 20 server kills (bolt and etcd), 500 soak deploys, and the other fault
# scenarios once.
kills:
	FERRY_RELIABILITY_KILLS=200 FERRY_RELIABILITY_SERVER_KILLS=20 FERRY_SOAK_DEPLOYS=500 go test -count=1 -v -timeout 90m \
		-run 'TestKillAgentAtRandomMoments|TestKillServerMidRollout|TestKillEtcdLeaderMidRollout|TestEtcdControlPlane|TestKillApplyAtRandomMoments|TestAgentDiskFull|TestDiskFullDuringUnpack|TestNetworkFaults|TestConcurrentDeploys|TestSoak' ./integration
	go test -count=1 -v -run 'TestSecurityMatrix|TestRouteRoles|TestUIAuth|TestLogs' ./internal/server

reliability: kills fuzz
