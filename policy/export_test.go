package policy

// TenantRevisionSpecialises reports whether the revision tenant uploaded,
// as ts loaded it, has specialised queries; false when it has none loaded.
func TenantRevisionSpecialises(ts *Tenants, tenant string) bool {
	tp, _ := ts.policyOf(tenant)
	return tp != nil && tp.rev != nil && tp.rev.special != nil
}
