package audit

import "context"

type actorKey struct{}

// WithActor returns ctx carrying who acts, as the audit log should name
// them (an API key as "key:<id>").
func WithActor(ctx context.Context, actor string) context.Context {
	return context.WithValue(ctx, actorKey{}, actor)
}

// ActorOr returns the actor ctx carries, or fallback when it carries none.
func ActorOr(ctx context.Context, fallback string) string {
	if a, ok := ctx.Value(actorKey{}).(string); ok && a != "" {
		return a
	}
	return fallback
}
