package store

import (
	"slices"
	"strings"

	"github.com/tidings-health/tidings/journey"
	"github.com/tidings-health/tidings/seal"
)

// Patients are found by blind index (see seal.IndexKeys): rows carry the
// index made with the tenant's index key version when they were written,
// and a lookup by patient probes every version still configured, the
// current first, so a rotation needs no downtime. `tidings keys reindex`
// (Reindex) rewrites older rows to the current version.

// PatientIndex is the blind index of a patient reference in a tenant, as
// new rows carry it.
func (s *Store) PatientIndex(tenantID, patientRef string) string {
	return s.keys.BlindIndex(tenantID, indexPatient, strings.TrimSpace(patientRef))
}

// patientProbes are the indexes a lookup of the patient probes.
func (s *Store) patientProbes(tenantID, patientRef string) []string {
	return s.keys.BlindIndexes(tenantID, indexPatient, strings.TrimSpace(patientRef))
}

// patientsByIndex are the probes of several patients of a tenant, and the
// patient each probe stands for.
type patientsByIndex struct {
	probes []string
	ref    map[string]string // probe -> patient reference
}

func (s *Store) patientsByIndex(tenantID string, patientRefs []string) patientsByIndex {
	p := patientsByIndex{ref: map[string]string{}}
	for _, ref := range patientRefs {
		ref = strings.TrimSpace(ref)
		for _, i := range s.patientProbes(tenantID, ref) {
			if _, ok := p.ref[i]; !ok {
				p.probes = append(p.probes, i)
				p.ref[i] = ref
			}
		}
	}
	return p
}

// currentIndex reports whether a row's index is made with the tenant's
// current index key version.
func (s *Store) currentIndex(tenantID, index string) bool {
	return seal.IndexVersion(index) == s.keys.Index().Version(tenantID)
}

// olderPatientIndexes are the indexes of a patient under the versions
// other than the current one: rows an upsert of the patient replaces.
func (s *Store) olderPatientIndexes(tenantID, patientRef string) []string {
	return s.patientProbes(tenantID, patientRef)[1:]
}

// spreadRefs files what was found under a patient's reference (trimmed, as
// patientsByIndex keeps it) under each way the caller wrote it.
func spreadRefs[T any](out map[string]T, patientRefs []string) {
	for _, ref := range patientRefs {
		if v, ok := out[strings.TrimSpace(ref)]; ok {
			out[ref] = v
		}
	}
}

// runPatientProbes are the indexes the rows of a run's patient may carry:
// every version's, from the reference in its facts, and the run's own.
func (s *Store) runPatientProbes(r journey.Run) []string {
	ref := r.Facts["patient"]
	if ref == "" {
		return []string{r.PatientIndex}
	}
	probes := s.patientProbes(r.TenantID, ref)
	if !slices.Contains(probes, r.PatientIndex) {
		probes = append(probes, r.PatientIndex)
	}
	return probes
}

// sealPatient seals a patient reference for a row's patient_index; nil
// without a reference.
func (s *Store) sealPatient(c sealedColumn, tenantID, index, patientRef string) []byte {
	if patientRef == "" {
		return nil
	}
	return s.seal([]byte(patientRef), c, tenantID, index)
}

// patientSubject is the subject of a run about the patient as a whole
// (see journey's patientRun).
func patientSubject(index string) string { return "patient:" + index }

// olderPatientSubjects are the subjects a patient-scoped run would have
// had under the tenant's other index versions; none for other runs.
func (s *Store) olderPatientSubjects(r journey.NewRun) []string {
	ref := r.Facts["patient"]
	if !strings.HasPrefix(r.Subject, "patient:") || ref == "" {
		return nil
	}
	var out []string
	for _, i := range s.olderPatientIndexes(r.TenantID, ref) {
		out = append(out, patientSubject(i))
	}
	return out
}

// IndexVersion is the index key version the tenant's new rows use and
// Reindex moves its older rows to.
func (s *Store) IndexVersion(tenantID string) int { return s.keys.Index().Version(tenantID) }
