package client

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// Every IANA special-purpose block that is not globally reachable, and the
// translation prefixes that reach IPv4 through a gateway (NAT64, 6to4,
// Teredo), is refused: a source registered with such an address could reach
// internal services. One address per range, at its start, inside and at its
// end where the range is small enough to matter.
var nonPublicAddrs = []struct{ rng, addr string }{
	{"0.0.0.0/8 this network", "0.0.0.0"},
	{"0.0.0.0/8 this network", "0.1.2.3"},
	{"10.0.0.0/8 private", "10.1.2.3"},
	{"100.64.0.0/10 CGNAT", "100.64.0.1"},
	{"100.64.0.0/10 CGNAT", "100.127.255.254"},
	{"127.0.0.0/8 loopback", "127.0.0.1"},
	{"127.0.0.0/8 loopback", "127.255.255.254"},
	{"169.254.0.0/16 link local", "169.254.169.254"},
	{"172.16.0.0/12 private", "172.31.0.1"},
	{"192.0.0.0/24 IETF protocol assignments", "192.0.0.1"},
	{"192.0.0.0/24 IETF protocol assignments", "192.0.0.170"},
	{"192.0.2.0/24 TEST-NET-1", "192.0.2.10"},
	{"192.88.99.0/24 6to4 relay anycast", "192.88.99.1"},
	{"192.168.0.0/16 private", "192.168.0.1"},
	{"198.18.0.0/15 benchmarking", "198.18.0.1"},
	{"198.18.0.0/15 benchmarking", "198.19.255.254"},
	{"198.51.100.0/24 TEST-NET-2", "198.51.100.7"},
	{"203.0.113.0/24 TEST-NET-3", "203.0.113.9"},
	{"224.0.0.0/4 multicast", "239.1.2.3"},
	{"240.0.0.0/4 reserved", "240.0.0.1"},
	{"240.0.0.0/4 reserved", "254.1.2.3"},
	{"255.255.255.255/32 broadcast", "255.255.255.255"},

	{"::/128 unspecified", "::"},
	{"::1/128 loopback", "::1"},
	{"::/96 IPv4-compatible (deprecated)", "::10.1.2.3"},
	{"::/96 IPv4-compatible of a public address", "::8.8.8.8"},
	{"::ffff:0:0/96 IPv4-mapped loopback", "::ffff:127.0.0.1"},
	{"::ffff:0:0/96 IPv4-mapped private", "::ffff:10.0.0.1"},
	{"::ffff:0:0/96 IPv4-mapped benchmarking", "::ffff:198.18.0.1"},
	{"::ffff:0:0:0/96 IPv4-translated", "::ffff:0:7f00:1"},
	{"64:ff9b::/96 NAT64 of loopback", "64:ff9b::7f00:1"},
	{"64:ff9b::/96 NAT64 of a public address", "64:ff9b::808:808"},
	{"64:ff9b:1::/48 local NAT64", "64:ff9b:1::a00:1"},
	{"100::/64 discard only", "100::1"},
	{"2001::/32 Teredo", "2001:0:4136:e378:8000:63bf:3fff:fdd2"},
	{"2001::/23 IETF protocol assignments", "2001:2::1"},
	{"2001:db8::/32 documentation", "2001:db8::1"},
	{"2002::/16 6to4 of a private address", "2002:a00:1::1"},
	{"2002::/16 6to4 of loopback", "2002:7f00:1::1"},
	{"2002::/16 6to4 of a public address", "2002:808:808::1"},
	{"3fff::/20 documentation", "3fff::1"},
	{"5f00::/16 SRv6 SIDs", "5f00::1"},
	{"fc00::/7 unique local", "fd00::1"},
	{"fe80::/10 link local", "fe80::1"},
	{"fec0::/10 site local (deprecated)", "fec0::1"},
	{"ff00::/8 multicast", "ff02::1"},
	{"outside 2000::/3 (unallocated)", "4000::1"},
}

func TestNonPublicAddressesAreRefused(t *testing.T) {
	for _, tc := range nonPublicAddrs {
		t.Run(tc.rng+" "+tc.addr, func(t *testing.T) {
			if publicAddr(netip.MustParseAddr(tc.addr)) {
				t.Errorf("%s (%s) counted as public", tc.addr, tc.rng)
			}
		})
	}
}

// The boundaries of the refused ranges stay reachable.
func TestPublicAddressesAreAllowed(t *testing.T) {
	for _, a := range []string{
		"93.184.216.34", "8.8.8.8", "1.1.1.1", "100.63.255.255", "100.128.0.0", "192.0.1.1", "198.17.255.255",
		"198.20.0.0", "223.255.255.255", "::ffff:93.184.216.34", "2606:4700:4700::1111", "2a00:1450:4001:82a::200e",
		"2001:200::1", "2003::1",
	} {
		if !publicAddr(netip.MustParseAddr(a)) {
			t.Errorf("%s was refused", a)
		}
	}
}

// The guarded client refuses to connect to such addresses, at dial time,
// with ErrPrivateAddress; the check is not just a table.
func TestGuardedClientRefusesSpecialPurposeAddresses(t *testing.T) {
	for _, hostport := range []string{
		"198.18.0.1:443", "240.0.0.1:443", "192.0.0.8:443", "0.0.0.1:443", "100.64.0.1:443",
		"[64:ff9b::7f00:1]:443", "[2002:7f00:1::1]:443", "[2001:0:4136:e378:8000:63bf:3fff:fdd2]:443", "[::ffff:127.0.0.1]:443",
	} {
		t.Run(hostport, func(t *testing.T) {
			c, err := New(Options{BaseURL: "https://" + hostport + "/fhir", DenyPrivateNetworks: true, MaxRetries: -1})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			_, err = c.Read(ctx, "Patient", "p1")
			if !errors.Is(err, ErrPrivateAddress) {
				var dnsErr *net.DNSError
				t.Fatalf("fetch from %s: %v (dns error: %v), want ErrPrivateAddress", hostport, err, errors.As(err, &dnsErr))
			}
		})
	}
}

// A refused address stays refused: the client does not back off and dial it
// again.
func TestRefusedAddressIsNotRetried(t *testing.T) {
	var sleeps int
	c, err := New(Options{BaseURL: "https://198.18.0.1/fhir", DenyPrivateNetworks: true, MaxRetries: 3,
		Sleep: func(context.Context, time.Duration) error { sleeps++; return nil }})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Read(context.Background(), "Patient", "p1")
	if !errors.Is(err, ErrPrivateAddress) || sleeps != 0 || !strings.Contains(err.Error(), "address refused") {
		t.Fatalf("err %v after %d retries, want ErrPrivateAddress and none", err, sleeps)
	}
}
