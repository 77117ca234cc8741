// Package portal serves the page a notice's link opens
// (/portal/{tenant}/notices/{token}): the patient proves who they are, with
// a one-time code mailed to the address of record and/or the date of birth
// as the tenant chose, and then reads the notice with the detail the policy
// allowed on the authenticated portal. It owns the page's templates, its
// limits against guessing and its session cookie; storage and mail are
// behind the interfaces it declares.
package portal
