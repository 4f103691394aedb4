package msadstest

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/msads-syncer/syncer/internal/msads"
)

// Dataset is the simulated content of the API, as the credential's user sees
// it. A user is listed by GetUsersInfo(C) when it holds a role in customer C.
// Roles in customers outside Customers exist (a person may work for other
// agencies) but GetUser never returns them: they are not visible to the
// caller.
type Dataset struct {
	Customers   []msads.Customer // the customers the credential reaches
	Accounts    []msads.Account
	Users       []msads.User // one per user id; CustomerID is ignored, HomeCustomerID is the User object's CustomerId
	Roles       []msads.Role // every role, visible or not
	Invitations []msads.Invitation
	// Links are the client links (SearchClientLinks), of every status and
	// both directions: into the customers (and their accounts) and held by
	// them as agencies. ClientCustomerID is ignored (the API has none).
	Links []msads.ClientLink

	// Principal is the signed-in user (the credential's): GetUser with a
	// null or omitted UserId answers it. 0 means the first of Users.
	Principal int64
	// UserFaults are GetUser faults of single users, in every customer
	// context: users a customer lists but GetUser cannot read (106, a lone
	// 105 on HTTP 401, a null User…). See also Server.SetUserFault.
	UserFaults map[int64]UserFault
	// StaleListings are users a customer's GetUsersInfo still lists though
	// they were deleted: GetUser answers 1001 UserNotFound (see
	// Server.DeleteUserKeepListing).
	StaleListings []StaleListing
}

// StaleListing is a GetUsersInfo entry of a deleted user.
type StaleListing struct {
	CustomerID int64 // the listing customer
	UserID     int64
	UserName   string
	Status     string // the UserLifeCycleStatus StatusFilter matches
}

// PrincipalID returns the signed-in user's id: Principal, else the first
// user's, else 0.
func (d *Dataset) PrincipalID() int64 {
	if d.Principal != 0 {
		return d.Principal
	}
	if len(d.Users) > 0 {
		return d.Users[0].ID
	}
	return 0
}

// GrantPrincipalEverywhere gives the principal (PrincipalID) roleID in
// every customer where it holds no role, as a real credential's user holds
// a role in every customer it reaches. The principal is then listed by
// every customer.
func (d *Dataset) GrantPrincipalEverywhere(roleID int32) {
	p := d.PrincipalID()
	if p == 0 {
		return
	}
	for _, c := range d.Customers {
		if !hasRoleIn(d.Roles, p, c.ID) {
			d.Roles = append(d.Roles, msads.Role{UserID: p, CustomerID: c.ID, RoleID: roleID})
		}
	}
}

// CustomerIDs returns the ids of the reachable customers, in order.
func (d *Dataset) CustomerIDs() []int64 {
	ids := make([]int64, len(d.Customers))
	for i, c := range d.Customers {
		ids[i] = c.ID
	}
	return ids
}

// Clone returns a deep copy.
func (d *Dataset) Clone() *Dataset {
	cp := &Dataset{
		Customers:     slices.Clone(d.Customers),
		Accounts:      slices.Clone(d.Accounts),
		Users:         slices.Clone(d.Users),
		Roles:         slices.Clone(d.Roles),
		Invitations:   slices.Clone(d.Invitations),
		Links:         slices.Clone(d.Links),
		Principal:     d.Principal,
		StaleListings: slices.Clone(d.StaleListings),
	}
	if d.UserFaults != nil {
		cp.UserFaults = make(map[int64]UserFault, len(d.UserFaults))
		for k, v := range d.UserFaults {
			cp.UserFaults[k] = v
		}
	}
	for i := range cp.Users {
		if t := cp.Users[i].LastModifiedTime; t != nil {
			tc := *t
			cp.Users[i].LastModifiedTime = &tc
		}
	}
	for i := range cp.Roles {
		cp.Roles[i].AccountIDs = slices.Clone(cp.Roles[i].AccountIDs)
		cp.Roles[i].LinkedAccountIDs = slices.Clone(cp.Roles[i].LinkedAccountIDs)
	}
	for i := range cp.Invitations {
		cp.Invitations[i].AccountIDs = slices.Clone(cp.Invitations[i].AccountIDs)
		if t := cp.Invitations[i].ExpirationDate; t != nil {
			tc := *t
			cp.Invitations[i].ExpirationDate = &tc
		}
	}
	for i := range cp.Accounts {
		if p := cp.Accounts[i].PauseReason; p != nil {
			pc := *p
			cp.Accounts[i].PauseReason = &pc
		}
	}
	return cp
}

// ListedUserIDs returns the ids GetUsersInfo(customerID) lists, sorted:
// the users with a role in the customer and its stale listings.
func (d *Dataset) ListedUserIDs(customerID int64) []int64 {
	var ids []int64
	for _, r := range d.Roles {
		if r.CustomerID == customerID {
			ids = append(ids, r.UserID)
		}
	}
	for _, l := range d.StaleListings {
		if l.CustomerID == customerID {
			ids = append(ids, l.UserID)
		}
	}
	slices.Sort(ids)
	return slices.Compact(ids)
}

// DistinctListedUsers returns how many distinct users all reachable
// customers list together: the number of GetUser calls a run needs.
func (d *Dataset) DistinctListedUsers() int {
	reach := map[int64]bool{}
	for _, c := range d.Customers {
		reach[c.ID] = true
	}
	seen := map[int64]bool{}
	for _, r := range d.Roles {
		if reach[r.CustomerID] {
			seen[r.UserID] = true
		}
	}
	for _, l := range d.StaleListings {
		if reach[l.CustomerID] {
			seen[l.UserID] = true
		}
	}
	return len(seen)
}

// PrincipalSuperAdmin makes the signed-in user Super Admin in every
// customer (as a service account usually is), so every client link search
// is permitted; it returns d.
func (d *Dataset) PrincipalSuperAdmin() *Dataset {
	p := d.Principal
	if p == 0 && len(d.Users) > 0 {
		p = d.Users[0].ID
	}
	for _, c := range d.Customers {
		d.Roles = append(d.Roles, msads.Role{UserID: p, CustomerID: c.ID, RoleID: msads.RoleSuperAdmin})
	}
	return d
}

// MinimumCalls is the fewest API calls, per operation, a fault-free run of
// every reachable customer can make: per customer GetUsersInfo,
// SearchUserInvitations and GetAccountsInfo; one GetUser per distinct
// listed user and the run's own (the signed-in user); one
// GetCustomersInfo; and with links, per customer the three client link
// searches (ClientCustomerId; ClientAccountId for each 10 of its accounts,
// the most an In predicate takes, none without accounts;
// DirectManagingCustomerId), each a page of 100 more per 100 links it
// finds (paging stops at a short page), for a signed-in user who may make
// every search (Super Admin in every customer; a search refused for one
// batch of accounts is asked again account by account).
func (d *Dataset) MinimumCalls(links bool) map[string]int {
	n := len(d.Customers)
	out := map[string]int{
		msads.OpGetUsersInfo: n, msads.OpSearchUserInvitations: n, msads.OpGetAccountsInfo: n,
		msads.OpGetUser: d.DistinctListedUsers() + 1, msads.OpGetCustomersInfo: 1,
	}
	if !links {
		return out
	}
	pages := func(found int) int { return found/100 + 1 }
	calls := 0
	for _, c := range d.Customers {
		into, held := 0, 0
		accountLinks := map[int64]int{}
		for _, l := range d.Links {
			if l.Type == msads.LinkTypeCustomer && l.ClientEntityID == c.ID {
				into++
			}
			if l.Type != msads.LinkTypeCustomer {
				accountLinks[l.ClientEntityID]++
			}
			if l.ManagingCustomerID == c.ID {
				held++
			}
		}
		var accounts []int64
		for _, a := range d.Accounts {
			if a.CustomerID == c.ID {
				accounts = append(accounts, a.ID)
			}
		}
		slices.Sort(accounts)
		for batch := range slices.Chunk(slices.Compact(accounts), 10) {
			found := 0
			for _, id := range batch {
				found += accountLinks[id]
			}
			calls += pages(found)
		}
		calls += pages(into) + pages(held)
	}
	out[msads.OpSearchClientLinks] = calls
	return out
}

var (
	firstNames = []string{"Alice", "Bruno", "Chen", "Dana", "Emeka", "Fatima", "Gustav", "Hana", "Ines", "Jonas",
		"Kavya", "Liam", "Mei", "Nadia", "Omar", "Priya", "Quentin", "Rosa", "Sven", "Tomoko", "Umar", "Vera", "Wen", "Yusuf", "Zoe"}
	lastNames = []string{"Smith", "García", "Müller", "Okafor", "Tanaka", "Rossi", "Novak", "Kowalski", "Dubois", "Haddad",
		"Johansson", "Nguyen", "Silva", "Petrov", "O'Brien", "Kim", "Schmidt", "Ivanova", "Costa", "Andersen"}
	companies = []string{"Contoso", "Fabrikam", "Northwind", "Adventure Works", "Tailspin", "Woodgrove", "Litware",
		"Proseware", "Wide World Importers", "Alpine Ski House", "Coho Winery", "Fourth Coffee", "Margie's Travel",
		"Lucerne Publishing", "Trey Research", "Humongous Insurance", "Blue Yonder Airlines", "Graphic Design Institute",
		"Relecloud", "VanArsdel"}
	domains  = []string{"contoso.com", "fabrikam.com", "northwind.example", "outlook.com", "agency.example"}
	lcids    = []string{"EnglishUS", "EnglishUK", "GermanGermany", "FrenchFrance", "SpanishSpain", "JapaneseJapan"}
	statuses = []string{"Active", "Active", "Active", "Active", "Inactive"}
	jobs     = []string{"", "", "Media Buyer", "Account Manager", "Analyst", "Head of Search", "Finance"}
)

const (
	customerBase   int64 = 150_000_000
	externalBase   int64 = 990_000_000
	userBase       int64 = 80_000_000
	accountBase    int64 = 180_000_000
	invitationBase int64 = 9_000
)

// Generate builds a deterministic data set of customers customers with
// about usersPerCustomer listed users each. About a tenth of the users are
// also listed under a second customer (so GetUser dedup matters), some hold
// roles in customers outside the credential's reach (never returned), roles
// mix customer-level (nil AccountIDs) and account-scoped ones, aggregators
// hold 41 and 33, each customer has 2–5 accounts and 1–4 pending
// invitations, some expired. Invitation expiry is relative to today's date
// (UTC midnight), so everything else is identical for a given seed.
func Generate(seed int64, customers, usersPerCustomer int) *Dataset {
	return GenerateAt(seed, customers, usersPerCustomer, time.Now().UTC().Truncate(24*time.Hour))
}

// GenerateAt is Generate with an explicit "now" for invitation expiry.
func GenerateAt(seed int64, customers, usersPerCustomer int, now time.Time) *Dataset {
	rng := rand.New(rand.NewPCG(uint64(seed), 0x5eed))
	d := &Dataset{}
	accountsOf := map[int64][]int64{}
	for i := range customers {
		cid := customerBase + int64(i+1)*1_000 + int64(rng.IntN(1000))
		name := companies[i%len(companies)]
		if i >= len(companies) {
			name = fmt.Sprintf("%s %d", name, i/len(companies)+1)
		}
		d.Customers = append(d.Customers, msads.Customer{ID: cid, Name: name})
		n := 2 + rng.IntN(4)
		for j := range n {
			aid := accountBase + int64(i+1)*100 + int64(j)
			status := "Active"
			var pause *int32
			if rng.IntN(6) == 0 {
				status = "Pause"
				p := int32(1 + rng.IntN(2))
				pause = &p
			}
			d.Accounts = append(d.Accounts, msads.Account{ID: aid, CustomerID: cid, Name: fmt.Sprintf("%s %s", name, []string{"Search", "Brand", "Shopping", "EMEA", "APAC"}[j%5]),
				Number: fmt.Sprintf("F%07X", aid%0xFFFFFFF), Status: status, PauseReason: pause})
			accountsOf[cid] = append(accountsOf[cid], aid)
		}
	}
	nextUser := userBase
	// has[{user, customer}] tells whether d.Roles holds a role of user in
	// customer; listedOf[ci] is ListedUserIDs of customer ci once complete.
	// Both only index d.Roles: the data drawn is the same as scanning it.
	has := map[[2]int64]bool{}
	addRoles := func(rs []msads.Role) {
		for _, r := range rs {
			has[[2]int64{r.UserID, r.CustomerID}] = true
		}
		d.Roles = append(d.Roles, rs...)
	}
	var prevListed []int64
	for ci, c := range d.Customers {
		if ci > 0 {
			prevListed = d.ListedUserIDs(d.Customers[ci-1].ID) // complete: later roles are in later customers
		}
		for range usersPerCustomer {
			// Every tenth listing of customers after the first reuses a user
			// of the previous customer: a person with roles in both.
			if ci > 0 && rng.IntN(10) == 0 {
				cands := prevListed
				var pick int64
				for _, id := range cands {
					if !has[[2]int64{id, c.ID}] {
						pick = id
						break
					}
				}
				if pick != 0 && rng.IntN(2) == 0 {
					pick = cands[rng.IntN(len(cands))]
				}
				if pick != 0 && !has[[2]int64{pick, c.ID}] {
					addRoles(genRoles(rng, pick, c.ID, accountsOf[c.ID]))
					continue
				}
			}
			nextUser += int64(1 + rng.IntN(7))
			u := genUser(rng, nextUser, c.ID, now)
			d.Users = append(d.Users, u)
			addRoles(genRoles(rng, u.ID, c.ID, accountsOf[c.ID]))
			if rng.IntN(25) == 0 { // also works for an agency we cannot see
				addRoles([]msads.Role{{UserID: u.ID, CustomerID: externalBase + int64(rng.IntN(1000)), RoleID: msads.RoleStandardUser}})
			}
		}
		n := 1 + rng.IntN(4)
		for range n {
			d.Invitations = append(d.Invitations, genInvitation(rng, int64(len(d.Invitations))+invitationBase+int64(ci)*10, c.ID, accountsOf[c.ID], now))
		}
	}
	return d
}

func hasRoleIn(roles []msads.Role, userID, customerID int64) bool {
	for _, r := range roles {
		if r.UserID == userID && r.CustomerID == customerID {
			return true
		}
	}
	return false
}

func genUser(rng *rand.Rand, id, home int64, now time.Time) msads.User {
	fn := firstNames[rng.IntN(len(firstNames))]
	ln := lastNames[rng.IntN(len(lastNames))]
	email := fmt.Sprintf("%s.%s%d@%s", strings.ToLower(fn), strings.ToLower(strings.NewReplacer("'", "", "ü", "u", "í", "i").Replace(ln)), id%1000, domains[rng.IntN(len(domains))])
	userName := email
	if rng.IntN(5) == 0 {
		userName = fmt.Sprintf("%s%d@outlook.com", strings.ToLower(fn), id%10000)
	}
	mod := now.Add(-time.Duration(rng.IntN(400*24)) * time.Hour).Add(time.Duration(rng.IntN(3600_000)) * time.Millisecond)
	return msads.User{
		ID: id, HomeCustomerID: home, UserName: userName, Email: email, FirstName: fn, LastName: ln,
		JobTitle: jobs[rng.IntN(len(jobs))], Lcid: lcids[rng.IntN(len(lcids))], LifecycleStatus: statuses[rng.IntN(len(statuses))],
		LastModifiedTime: &mod,
	}
}

func genRoles(rng *rand.Rand, userID, customerID int64, accounts []int64) []msads.Role {
	switch k := rng.IntN(10); {
	case k == 0: // aggregator
		return []msads.Role{
			{UserID: userID, CustomerID: customerID, RoleID: msads.RoleSuperAdmin},
			{UserID: userID, CustomerID: customerID, RoleID: msads.RoleAggregator},
		}
	case k <= 2:
		return []msads.Role{{UserID: userID, CustomerID: customerID, RoleID: msads.RoleSuperAdmin}}
	case k <= 5:
		return []msads.Role{{UserID: userID, CustomerID: customerID, RoleID: msads.RoleStandardUser}}
	default: // account-scoped
		role := msads.RoleAdvertiserCampaignManager
		if k == 9 {
			role = msads.RoleViewer
		}
		n := 1 + rng.IntN(len(accounts))
		ids := slices.Clone(accounts[:n])
		r := msads.Role{UserID: userID, CustomerID: customerID, RoleID: role, AccountIDs: ids}
		if rng.IntN(8) == 0 {
			r.CustomerLinkPermission = "Standard"
			r.LinkedAccountIDs = []int64{accounts[0]}
		}
		return []msads.Role{r}
	}
}

func genInvitation(rng *rand.Rand, id, customerID int64, accounts []int64, now time.Time) msads.Invitation {
	fn := firstNames[rng.IntN(len(firstNames))]
	ln := lastNames[rng.IntN(len(lastNames))]
	// Sent between 90 days ago and today; expires 30 days after sending.
	sent := now.Add(-time.Duration(rng.IntN(90*24)) * time.Hour).Add(time.Duration(rng.IntN(3600)) * time.Second)
	exp := sent.Add(30 * 24 * time.Hour)
	inv := msads.Invitation{ID: id, CustomerID: customerID, FirstName: fn, LastName: ln,
		Email:  fmt.Sprintf("%s.%s@%s", strings.ToLower(fn), strings.ToLower(strings.ReplaceAll(ln, "'", "")), domains[rng.IntN(len(domains))]),
		RoleID: []int32{msads.RoleStandardUser, msads.RoleSuperAdmin, msads.RoleAdvertiserCampaignManager, msads.RoleViewer}[rng.IntN(4)],
		Lcid:   lcids[rng.IntN(len(lcids))], ExpirationDate: &exp}
	if inv.RoleID == msads.RoleAdvertiserCampaignManager || inv.RoleID == msads.RoleViewer {
		inv.AccountIDs = []int64{accounts[rng.IntN(len(accounts))]}
	}
	return inv
}

// Ids of the odd users DemoDataset adds to the generated ones (above every
// generated id, so the demo's "first listed users" stay ordinary ones).
const (
	DemoPrincipal     int64 = userBase + 4_000_001 // the signed-in user: Super Admin in every customer
	DemoUnreadable106 int64 = userBase + 4_000_010 // listed by customer 2; GetUser answers 106
	DemoUnreadable105 int64 = userBase + 4_000_011 // listed by customer 3; GetUser answers a lone 105 on HTTP 401
	DemoNullUser      int64 = userBase + 4_000_012 // listed by customer 1; GetUser answers {"User": null}
	DemoDeletedUser   int64 = userBase + 4_000_020 // listed by customer 1, deleted: GetUser answers 1001
	DemoInactiveUser  int64 = userBase + 4_000_030 // UserLifeCycleStatus Inactive
	DemoPendingUser   int64 = userBase + 4_000_031 // UserLifeCycleStatus Pending
	DemoTwoCustomers  int64 = userBase + 4_000_040 // roles in customers 1 and 2, one with AccountIds []
	DemoNullAccounts  int64 = userBase + 4_000_050 // Advertiser Campaign Manager with AccountIds null
)

// DemoDataset is a small, human-looking data set for `syncer demo`: three
// customers, a few dozen users (some with roles in two customers or in an
// unreachable one), account-scoped and customer-level roles, and pending
// invitations of which some have expired. Expiry dates are relative to now.
//
// It is also a realistic tenant, with the odd users of the Demo* ids: a
// principal with a role in every customer; users listed but unreadable
// (Dataset.UserFaults: 106, a lone 105 on HTTP 401, a null User); a user
// deleted between the listing and the read (a stale listing, GetUser 1001);
// Inactive and Pending users; a user with roles in two customers; and
// account-scoped roles with AccountIds [] and null. Everything else is
// generated deterministically.
func DemoDataset() *Dataset {
	now := time.Now().UTC().Truncate(time.Second)
	d := GenerateAt(20260401, 3, 14, now)
	// Make sure there is at least one long-expired and one fresh invitation
	// per customer, whatever the generator drew.
	for i, c := range d.Customers {
		old := now.Add(-45 * 24 * time.Hour)
		fresh := now.Add(27 * 24 * time.Hour)
		d.Invitations = append(d.Invitations,
			msads.Invitation{ID: 7_000 + int64(i)*2, CustomerID: c.ID, Email: fmt.Sprintf("temp.contractor%d@gmail.example", i+1),
				FirstName: "Temp", LastName: "Contractor", RoleID: msads.RoleSuperAdmin, Lcid: "EnglishUS", ExpirationDate: &old},
			msads.Invitation{ID: 7_001 + int64(i)*2, CustomerID: c.ID, Email: fmt.Sprintf("new.analyst%d@contoso.com", i+1),
				FirstName: "New", LastName: "Analyst", RoleID: msads.RoleViewer, Lcid: "EnglishUK", ExpirationDate: &fresh,
				AccountIDs: []int64{accountIDsOf(d, c.ID)[0]}})
	}
	addDemoTenantTraits(d, now)
	addDemoLinks(d, now)
	return d
}

// Demo agencies: outside customers that hold client links into the demo
// customers (DemoDataset).
const (
	DemoAgencyAdmin    int64 = 880_001 // Administrative customer link into the first customer, Active for a year
	DemoAgencyAccount  int64 = 880_002 // account link into the first customer's first account, Active
	DemoAgencyPending  int64 = 880_003 // account link into the second customer's, LinkPending for 20 days
	DemoAgencyUnlink   int64 = 880_004 // Standard customer link into the second customer, UnlinkPending (still grants)
	DemoAgencyFormer   int64 = 880_005 // account link into the third customer's, Inactive
	DemoAgencyDeclined int64 = 880_006 // account link into the third customer's, LinkDeclined
	DemoAgencyRequest  int64 = 880_007 // Administrative customer link request into the third customer, LinkPending for 9 days
	// DemoAgencyStatuses is the first of eight agencies, one per status no
	// link above has (LinkAccepted, LinkCanceled, LinkExpired, LinkFailed,
	// UnlinkRequested, UnlinkInProgress, UnlinkCanceled, UnlinkFailed), each with an account
	// link into a demo customer's account: the demo serves every
	// ClientLinkStatus.
	DemoAgencyStatuses int64 = 880_010
	DemoOutsideAccount int64 = 990_001 // an outside client's account the third customer manages as an agency
	DemoOutsideClient  int64 = 990_100 // an outside client customer the third customer is being linked to
)

// addDemoLinks adds DemoDataset's client links: agencies' links into the
// demo customers in several statuses (an Administrative customer link, a
// pending request older than 7 days, an unlink in progress, former and
// declined links), a link between two demo customers (the first manages an
// account of the second: both customers' searches find it), and the third
// customer acting as an agency for outside clients.
func addDemoLinks(d *Dataset, now time.Time) {
	c := d.CustomerIDs()
	name := map[int64]string{}
	for _, x := range d.Customers {
		name[x.ID] = x.Name
	}
	days := func(n int) *time.Time { t := now.Add(-time.Duration(n) * 24 * time.Hour); return &t }
	yes, no := true, false
	acct := func(cid int64, i int) msads.Account {
		ids := accountIDsOf(d, cid)
		for _, a := range d.Accounts {
			if a.ID == ids[i%len(ids)] {
				return a
			}
		}
		return msads.Account{}
	}
	accountLink := func(a msads.Account, managing int64, managingName, status string, bill *bool, start, mod int, inviter string) msads.ClientLink {
		return msads.ClientLink{Type: msads.LinkTypeAccount, ClientEntityID: a.ID, ClientEntityNumber: a.Number, ClientEntityName: a.Name,
			ManagingCustomerID: managing, ManagingCustomerNumber: fmt.Sprintf("C%07d", managing%10_000_000), ManagingCustomerName: managingName, Status: status,
			IsBillToClient: bill, StartDate: days(start), InviterEmail: inviter, InviterName: managingName, InviterPhone: "+1 425 555 0199",
			Name: "Management of " + a.Name, LastModifiedTime: days(mod), LastModifiedByUserID: 4_000_001}
	}
	customerLink := func(client, managing int64, clientName, managingName, status, perm string, start, mod int, inviter string) msads.ClientLink {
		return msads.ClientLink{Type: msads.LinkTypeCustomer, ClientEntityID: client, ClientEntityNumber: fmt.Sprintf("C%07d", client%10_000_000),
			ClientEntityName: clientName, ManagingCustomerID: managing, ManagingCustomerNumber: fmt.Sprintf("C%07d", managing%10_000_000),
			ManagingCustomerName: managingName, Status: status, CustomerLinkPermission: perm, StartDate: days(start),
			InviterEmail: inviter, InviterName: managingName, Name: managingName + " manages " + clientName,
			Note: "Full-service agency agreement", LastModifiedTime: days(mod), LastModifiedByUserID: 4_000_002}
	}
	outside := msads.Account{ID: DemoOutsideAccount, CustomerID: 990_000, Name: "Tailspin Toys Search", Number: "F0990001"}
	d.Links = append(d.Links,
		customerLink(c[0], DemoAgencyAdmin, name[c[0]], "Northwind Media Group", "Active", "Administrative", 380, 380, "ops@northwindmedia.example"),
		accountLink(acct(c[0], 0), DemoAgencyAccount, "Fabrikam Search Partners", "Active", &no, 90, 90, "lead@fabrikampartners.example"),
		accountLink(acct(c[1], 0), DemoAgencyPending, "Adventure Works Digital", "LinkPending", &yes, 20, 20, "sales@adventureworks.example"),
		customerLink(c[1], DemoAgencyUnlink, name[c[1]], "Litware Performance", "UnlinkPending", "Standard", -2, 1, "am@litware.example"),
		accountLink(acct(c[2], 0), DemoAgencyFormer, "Proseware Ads", "Inactive", &yes, 60, 60, "hello@proseware.example"),
		accountLink(acct(c[2], 1), DemoAgencyDeclined, "Wingtip Marketing", "LinkDeclined", &yes, 12, 12, "new.business@wingtip.example"),
		customerLink(c[2], DemoAgencyRequest, name[c[2]], "Blue Yonder Agency", "LinkPending", "Administrative", 9, 9, "growth@blueyonder.example"),
		// The first demo customer manages an account of the second.
		accountLink(acct(c[1], 1), c[0], name[c[0]], "Active", &yes, 200, 200, "ads.admin@contoso.com"),
		// The third customer as an agency for outside clients.
		accountLink(outside, c[2], name[c[2]], "Active", &no, 150, 150, "campaigns@northwind.example"),
		customerLink(DemoOutsideClient, c[2], "Tailspin Toys Holding", name[c[2]], "LinkInProgress", "Standard", -1, 3, "campaigns@northwind.example"),
	)
	// The other statuses, none pending or privileged (so no exception).
	for i, st := range []string{"LinkAccepted", "LinkCanceled", "LinkExpired", "LinkFailed", "UnlinkRequested", "UnlinkInProgress", "UnlinkCanceled", "UnlinkFailed"} {
		agency := DemoAgencyStatuses + int64(i)
		d.Links = append(d.Links, accountLink(acct(c[i%3], 1+i/3), agency, fmt.Sprintf("Partner Agency %d", i+1), st, &no,
			40+5*i, 30+5*i, fmt.Sprintf("team@partner%d.example", i+1)))
	}
}

// addDemoTenantTraits adds DemoDataset's odd users to d (which needs at
// least three customers).
func addDemoTenantTraits(d *Dataset, now time.Time) {
	c := d.CustomerIDs()
	c0, c1, c2 := c[0], c[1], c[2]
	user := func(id, home int64, login, first, last, status string, ageDays int) {
		mod := now.Add(-time.Duration(ageDays)*24*time.Hour - 17*time.Minute - 123*time.Millisecond)
		d.Users = append(d.Users, msads.User{ID: id, HomeCustomerID: home, UserName: login, Email: login, FirstName: first, LastName: last,
			Lcid: "EnglishUS", LifecycleStatus: status, LastModifiedTime: &mod})
	}
	role := func(uid, cid int64, roleID int32, accounts []int64) {
		d.Roles = append(d.Roles, msads.Role{UserID: uid, CustomerID: cid, RoleID: roleID, AccountIDs: accounts})
	}
	user(DemoPrincipal, c0, "ads.admin@contoso.com", "Ada", "Admin", "Active", 3)
	for _, cid := range c {
		role(DemoPrincipal, cid, msads.RoleSuperAdmin, nil)
	}
	d.Principal = DemoPrincipal

	user(DemoUnreadable106, c1, "partner.viewer@agency.example", "Pat", "Partner", "Active", 40)
	role(DemoUnreadable106, c1, msads.RoleViewer, []int64{accountIDsOf(d, c1)[0]})
	user(DemoUnreadable105, c2, "old.login@outlook.example", "Olga", "Login", "Active", 200)
	role(DemoUnreadable105, c2, msads.RoleStandardUser, nil)
	user(DemoNullUser, c0, "ghost.profile@fabrikam.example", "Gus", "Profile", "Active", 12)
	role(DemoNullUser, c0, msads.RoleStandardUser, nil)
	d.UserFaults = map[int64]UserFault{
		DemoUnreadable106: {Code: 106},
		DemoUnreadable105: {Code: 105},
		DemoNullUser:      {NullUser: true},
	}
	d.StaleListings = append(d.StaleListings, StaleListing{CustomerID: c0, UserID: DemoDeletedUser, UserName: "left.last.week@contoso.com", Status: "Active"})

	user(DemoInactiveUser, c1, "disabled.user@fabrikam.example", "Ivan", "Inactive", "Inactive", 100)
	role(DemoInactiveUser, c1, msads.RoleStandardUser, nil)
	user(DemoPendingUser, c2, "pending.user@northwind.example", "Penny", "Pending", "Pending", 1)
	role(DemoPendingUser, c2, msads.RoleViewer, []int64{accountIDsOf(d, c2)[0]})

	user(DemoTwoCustomers, c0, "two.hats@contoso.com", "Tom", "Twohats", "Active", 7)
	role(DemoTwoCustomers, c0, msads.RoleStandardUser, nil)
	role(DemoTwoCustomers, c1, msads.RoleViewer, []int64{}) // account-scoped, no account listed: []
	user(DemoNullAccounts, c2, "campaigns@northwind.example", "Cam", "Paign", "Active", 30)
	role(DemoNullAccounts, c2, msads.RoleAdvertiserCampaignManager, nil) // account-scoped role, AccountIds null
}

func accountIDsOf(d *Dataset, customerID int64) []int64 {
	var ids []int64
	for _, a := range d.Accounts {
		if a.CustomerID == customerID {
			ids = append(ids, a.ID)
		}
	}
	return ids
}
