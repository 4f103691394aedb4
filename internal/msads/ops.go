package msads

// Operations the syncer calls, by the one name used everywhere: errors,
// logs, the metrics' operation label, the simulator's call counts.
const (
	OpGetUsersInfo          = "GetUsersInfo"
	OpGetUser               = "GetUser"
	OpSearchUserInvitations = "SearchUserInvitations"
	OpGetCustomersInfo      = "GetCustomersInfo"
	OpGetAccountsInfo       = "GetAccountsInfo"
	OpSearchClientLinks     = "SearchClientLinks"
	// OpToken is the OAuth token endpoint of the Microsoft identity platform.
	OpToken = "Token"
)

// OpPaths maps each Customer Management operation to its REST path under
// /CustomerManagement/v13/ (msads-api.md §1.1).
var OpPaths = map[string]string{
	OpGetUsersInfo:          "UsersInfo/Query",
	OpGetUser:               "User/Query",
	OpSearchUserInvitations: "UserInvitations/Search",
	OpGetCustomersInfo:      "CustomersInfo/Query",
	OpGetAccountsInfo:       "AccountsInfo/Query",
	// The path the Java SDK's REST client posts to (see docs/api-notes.md).
	OpSearchClientLinks: "ClientLinks/Search",
}
