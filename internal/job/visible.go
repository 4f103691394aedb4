package job

import (
	"context"
	"slices"

	"github.com/msads-syncer/syncer/internal/extract"
	"github.com/msads-syncer/syncer/internal/msads"
)

// Visibility is what one credential can see: its signed-in user, the roles
// that user holds, and the customers it reaches, with names when the API
// gives them.
type Visibility struct {
	Principal msads.User
	Roles     []msads.Role
	// Customers are sorted by id: those of GetCustomersInfo and those of
	// the signed-in user's own roles.
	Customers []msads.Customer
	// PrincipalErr and ListErr are the failures of the two lookups
	// (GetUser without a user id, GetCustomersInfo); with either set,
	// Customers may be incomplete.
	PrincipalErr, ListErr error
}

// Visible asks the API who client signs in as (Principal) and which
// customers it can see: the union of GetCustomersInfo (asked with a growing
// TopN until the answer is not full) and the customers of the signed-in
// user's own roles, so neither a capped list nor a customer reachable only
// through a role is missed. Runs use it to resolve their customers;
// `syncer auth` to show what a new sign-in reaches.
func Visible(ctx context.Context, client *extract.Client) Visibility {
	var v Visibility
	v.Principal, v.Roles, v.PrincipalErr = client.Principal(ctx)
	if v.PrincipalErr != nil && (extract.IsRunFatal(v.PrincipalErr) || ctx.Err() != nil) {
		return v
	}
	infos, err := client.GetCustomersInfo(ctx)
	v.ListErr = err
	names := make(map[int64]string, len(infos))
	ids := make([]int64, 0, len(infos)+len(v.Roles))
	for _, c := range infos {
		names[c.ID] = c.Name
		ids = append(ids, c.ID)
	}
	for _, r := range v.Roles {
		ids = append(ids, r.CustomerID)
	}
	slices.Sort(ids)
	ids = slices.Compact(ids)
	v.Customers = make([]msads.Customer, len(ids))
	for i, id := range ids {
		v.Customers[i] = msads.Customer{ID: id, Name: names[id]}
	}
	return v
}
