package extract

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/msads-syncer/syncer/internal/msads"
)

// Tolerant JSON decoding of the API's wire format (msads-api.md §2): 64-bit
// ids arrive as JSON strings but numbers are accepted too, null is accepted
// everywhere, date-times may or may not carry a zone and fractions, enums
// are text, unknown fields are ignored.

// flexInt64 decodes a long sent as a JSON string or number; null and "" are 0.
type flexInt64 int64

func (f *flexInt64) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) == 0 || string(b) == "null" {
		*f = 0
		return nil
	}
	s := string(b)
	if b[0] == '"' {
		var str string
		if err := json.Unmarshal(b, &str); err != nil {
			return err
		}
		s = strings.TrimSpace(str)
		if s == "" {
			*f = 0
			return nil
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		// Accept an integral number written with an exponent or ".0".
		fl, ferr := strconv.ParseFloat(s, 64)
		if ferr != nil || fl != float64(int64(fl)) || fl > 9.007199254740992e15 || fl < -9.007199254740992e15 {
			return fmt.Errorf("invalid 64-bit integer %.40q", s)
		}
		n = int64(fl)
	}
	*f = flexInt64(n)
	return nil
}

// flexInt64s decodes a long[]: null (or a missing field) is nil; an empty
// array is an empty non-nil slice. The two mean different things for
// AccountIds (every account, versus none listed) and are kept apart.
type flexInt64s []int64

func (f *flexInt64s) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if string(b) == "null" {
		*f = nil
		return nil
	}
	var raw []flexInt64
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	out := make([]int64, len(raw))
	for i, v := range raw {
		out[i] = int64(v)
	}
	*f = out
	return nil
}

// flexString decodes an enum or text sent as a string, number or bool; null is "".
type flexString string

func (f *flexString) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	switch {
	case len(b) == 0 || string(b) == "null":
		*f = ""
	case b[0] == '"':
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*f = flexString(s)
	case b[0] == '{' || b[0] == '[':
		return fmt.Errorf("expected a string, got %.20s", b)
	default:
		*f = flexString(b)
	}
	return nil
}

// flexTime decodes an ISO-8601 date-time; without a zone it is UTC. null and
// "" leave it unset.
type flexTime struct {
	T     time.Time
	Valid bool
}

var timeLayouts = []string{
	time.RFC3339Nano,                     // 2025-03-04T05:06:07.123Z, +01:00
	"2006-01-02T15:04:05.999999999",      // no zone: UTC
	"2006-01-02T15:04:05.999999999Z0700", // +0100
	"2006-01-02T15:04:05.999999999Z07",   // +01
	"2006-01-02 15:04:05.999999999Z07:00",
	"2006-01-02 15:04:05.999999999",
	"2006-01-02",
}

func (f *flexTime) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if string(b) == "null" {
		*f = flexTime{}
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("date-time: %w", err)
	}
	s = strings.TrimSpace(s)
	if s == "" {
		*f = flexTime{}
		return nil
	}
	t, err := parseTime(s)
	if err != nil {
		return err
	}
	*f = flexTime{T: t, Valid: true}
	return nil
}

func parseTime(s string) (time.Time, error) {
	for _, l := range timeLayouts {
		if t, err := time.Parse(l, s); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, fmt.Errorf("invalid date-time %.40q", s)
}

func (f flexTime) ptr() *time.Time {
	if !f.Valid {
		return nil
	}
	t := f.T
	return &t
}

// Wire shapes (msads-api.md §3–§4). Only the fields the sync needs.

type wireUserInfo struct {
	ID       flexInt64  `json:"Id"`
	UserName flexString `json:"UserName"`
}

type wireUsersInfoResponse struct {
	UsersInfo json.RawMessage `json:"UsersInfo"`
}

type wirePersonName struct {
	FirstName     flexString `json:"FirstName"`
	LastName      flexString `json:"LastName"`
	MiddleInitial flexString `json:"MiddleInitial"`
}

type wireContactInfo struct {
	Email flexString `json:"Email"`
}

type wireUser struct {
	ContactInfo         *wireContactInfo `json:"ContactInfo"`
	CustomerID          flexInt64        `json:"CustomerId"`
	ID                  flexInt64        `json:"Id"`
	JobTitle            flexString       `json:"JobTitle"`
	LastModifiedTime    flexTime         `json:"LastModifiedTime"`
	Lcid                flexString       `json:"Lcid"`
	Name                *wirePersonName  `json:"Name"`
	UserLifeCycleStatus flexString       `json:"UserLifeCycleStatus"`
	UserName            flexString       `json:"UserName"`
}

type wireCustomerRole struct {
	AccountIDs             flexInt64s `json:"AccountIds"`
	CustomerID             flexInt64  `json:"CustomerId"`
	CustomerLinkPermission flexString `json:"CustomerLinkPermission"`
	LinkedAccountIDs       flexInt64s `json:"LinkedAccountIds"`
	RoleID                 flexInt64  `json:"RoleId"`
}

type wireGetUserResponse struct {
	User          json.RawMessage     `json:"User"`
	CustomerRoles []*wireCustomerRole `json:"CustomerRoles"`
}

type wireInvitation struct {
	AccountIDs     flexInt64s `json:"AccountIds"`
	CustomerID     flexInt64  `json:"CustomerId"`
	Email          flexString `json:"Email"`
	ExpirationDate flexTime   `json:"ExpirationDate"`
	FirstName      flexString `json:"FirstName"`
	ID             flexInt64  `json:"Id"`
	LastName       flexString `json:"LastName"`
	Lcid           flexString `json:"Lcid"`
	RoleID         flexInt64  `json:"RoleId"`
}

type wireInvitationsResponse struct {
	UserInvitations json.RawMessage `json:"UserInvitations"`
}

type wireCustomerInfo struct {
	ID   flexInt64  `json:"Id"`
	Name flexString `json:"Name"`
}

type wireCustomersInfoResponse struct {
	CustomersInfo json.RawMessage `json:"CustomersInfo"`
}

type wireAccountInfo struct {
	AccountLifeCycleStatus flexString `json:"AccountLifeCycleStatus"`
	ID                     flexInt64  `json:"Id"`
	Name                   flexString `json:"Name"`
	Number                 flexString `json:"Number"`
	PauseReason            *flexInt64 `json:"PauseReason"`
}

type wireAccountsInfoResponse struct {
	AccountsInfo json.RawMessage `json:"AccountsInfo"`
}

type wireError struct {
	Code      flexInt64  `json:"Code"`
	ErrorCode flexString `json:"ErrorCode"`
	Message   flexString `json:"Message"`
}

type wireFault struct {
	TrackingID      flexString   `json:"TrackingId"`
	Type            flexString   `json:"Type"`
	Errors          []*wireError `json:"Errors"`
	OperationErrors []*wireError `json:"OperationErrors"`
	BatchErrors     []*wireError `json:"BatchErrors"`
	// Some gateways wrap the fault; accept that too.
	ApplicationFault *wireFault `json:"ApplicationFault"`
}

// unmarshal decodes a JSON object body. An empty body or null is an error:
// every documented response is an object.
func unmarshal(body []byte, v any) error {
	body = bytes.TrimSpace(body)
	if len(body) == 0 {
		return errors.New("empty response body")
	}
	if body[0] != '{' {
		return fmt.Errorf("response is not a JSON object (starts with %q)", body[0])
	}
	return json.Unmarshal(body, v)
}

// errNullUser is a GetUser answer whose User is an explicit null: the
// service will not show this user (permanent for the user, not malformed).
var errNullUser = errors.New("the answer's User is null")

// resultList decodes the operation's result field raw (named field) into
// out: a missing field is an error (the body is not the operation's
// answer: "{}", a gateway's JSON), an explicit null an empty list.
func resultList[T any](raw json.RawMessage, field string, out *[]*T) error {
	if len(raw) == 0 {
		return fmt.Errorf("the answer has no %s field", field)
	}
	if string(raw) == "null" {
		*out = nil
		return nil
	}
	return json.Unmarshal(raw, out)
}

func toInt32(v int64) (int32, error) {
	if v < -1<<31 || v > 1<<31-1 {
		return 0, fmt.Errorf("value %d out of int32 range", v)
	}
	return int32(v), nil
}

func decodeUsersInfo(body []byte) ([]UserInfo, error) {
	var r wireUsersInfoResponse
	if err := unmarshal(body, &r); err != nil {
		return nil, err
	}
	var list []*wireUserInfo
	if err := resultList(r.UsersInfo, "UsersInfo", &list); err != nil {
		return nil, err
	}
	out := make([]UserInfo, 0, len(list))
	for _, u := range list {
		if u == nil {
			continue
		}
		if u.ID == 0 {
			return nil, errors.New("UsersInfo entry without Id")
		}
		out = append(out, UserInfo{ID: int64(u.ID), UserName: string(u.UserName)})
	}
	return out, nil
}

// decodeUser decodes a GetUser response. The returned user has CustomerID
// unset (the caller sets the listing customer).
func decodeUser(body []byte) (msads.User, []msads.Role, error) {
	var r wireGetUserResponse
	if err := unmarshal(body, &r); err != nil {
		return msads.User{}, nil, err
	}
	switch string(r.User) {
	case "":
		return msads.User{}, nil, errors.New("the answer has no User field")
	case "null":
		return msads.User{}, nil, errNullUser
	}
	var w *wireUser
	if err := json.Unmarshal(r.User, &w); err != nil {
		return msads.User{}, nil, err
	}
	if w == nil || w.ID == 0 {
		return msads.User{}, nil, errors.New("the answer's User has no Id")
	}
	u := msads.User{
		ID:               int64(w.ID),
		HomeCustomerID:   int64(w.CustomerID),
		UserName:         string(w.UserName),
		JobTitle:         string(w.JobTitle),
		Lcid:             string(w.Lcid),
		LifecycleStatus:  string(w.UserLifeCycleStatus),
		LastModifiedTime: w.LastModifiedTime.ptr(),
	}
	if w.ContactInfo != nil {
		u.Email = string(w.ContactInfo.Email)
	}
	if w.Name != nil {
		u.FirstName = string(w.Name.FirstName)
		u.LastName = string(w.Name.LastName)
	}
	roles := make([]msads.Role, 0, len(r.CustomerRoles))
	for _, cr := range r.CustomerRoles {
		if cr == nil {
			continue
		}
		rid, err := toInt32(int64(cr.RoleID))
		if err != nil {
			return msads.User{}, nil, fmt.Errorf("CustomerRoles: RoleId: %w", err)
		}
		if cr.CustomerID == 0 {
			return msads.User{}, nil, errors.New("CustomerRoles entry without CustomerId")
		}
		roles = append(roles, msads.Role{
			UserID:                 u.ID,
			CustomerID:             int64(cr.CustomerID),
			RoleID:                 rid,
			AccountIDs:             []int64(cr.AccountIDs),
			LinkedAccountIDs:       []int64(cr.LinkedAccountIDs),
			CustomerLinkPermission: string(cr.CustomerLinkPermission),
		})
	}
	return u, roles, nil
}

func decodeInvitations(body []byte) ([]msads.Invitation, error) {
	var r wireInvitationsResponse
	if err := unmarshal(body, &r); err != nil {
		return nil, err
	}
	var list []*wireInvitation
	if err := resultList(r.UserInvitations, "UserInvitations", &list); err != nil {
		return nil, err
	}
	out := make([]msads.Invitation, 0, len(list))
	for _, w := range list {
		if w == nil {
			continue
		}
		if w.ID == 0 {
			return nil, errors.New("UserInvitations entry without Id")
		}
		rid, err := toInt32(int64(w.RoleID))
		if err != nil {
			return nil, fmt.Errorf("UserInvitations: RoleId: %w", err)
		}
		out = append(out, msads.Invitation{
			ID:             int64(w.ID),
			CustomerID:     int64(w.CustomerID),
			Email:          string(w.Email),
			FirstName:      string(w.FirstName),
			LastName:       string(w.LastName),
			RoleID:         rid,
			AccountIDs:     []int64(w.AccountIDs),
			Lcid:           string(w.Lcid),
			ExpirationDate: w.ExpirationDate.ptr(),
		})
	}
	return out, nil
}

func decodeCustomersInfo(body []byte) ([]msads.Customer, error) {
	var r wireCustomersInfoResponse
	if err := unmarshal(body, &r); err != nil {
		return nil, err
	}
	var list []*wireCustomerInfo
	if err := resultList(r.CustomersInfo, "CustomersInfo", &list); err != nil {
		return nil, err
	}
	out := make([]msads.Customer, 0, len(list))
	for _, w := range list {
		if w == nil {
			continue
		}
		if w.ID == 0 {
			return nil, errors.New("CustomersInfo entry without Id")
		}
		out = append(out, msads.Customer{ID: int64(w.ID), Name: string(w.Name)})
	}
	return out, nil
}

func decodeAccountsInfo(body []byte, customerID int64) ([]msads.Account, error) {
	var r wireAccountsInfoResponse
	if err := unmarshal(body, &r); err != nil {
		return nil, err
	}
	var list []*wireAccountInfo
	if err := resultList(r.AccountsInfo, "AccountsInfo", &list); err != nil {
		return nil, err
	}
	out := make([]msads.Account, 0, len(list))
	for _, w := range list {
		if w == nil {
			continue
		}
		if w.ID == 0 {
			return nil, errors.New("AccountsInfo entry without Id")
		}
		a := msads.Account{
			ID:         int64(w.ID),
			CustomerID: customerID,
			Name:       string(w.Name),
			Number:     string(w.Number),
			Status:     string(w.AccountLifeCycleStatus),
		}
		if w.PauseReason != nil {
			pr, err := toInt32(int64(*w.PauseReason))
			if err != nil {
				return nil, fmt.Errorf("AccountsInfo: PauseReason: %w", err)
			}
			a.PauseReason = &pr
		}
		out = append(out, a)
	}
	return out, nil
}

// decodeFault parses a fault body (msads-api.md §6.1). ok is false when the
// body is not a recognisable fault.
func decodeFault(body []byte) (trackingID string, details []ErrorDetail, ok bool) {
	var f wireFault
	if err := unmarshal(body, &f); err != nil {
		return "", nil, false
	}
	if f.ApplicationFault != nil && len(f.Errors) == 0 && len(f.OperationErrors) == 0 && len(f.BatchErrors) == 0 {
		inner := f.ApplicationFault
		inner.ApplicationFault = nil
		f = *inner
	}
	for _, list := range [][]*wireError{f.Errors, f.OperationErrors, f.BatchErrors} {
		for _, e := range list {
			if e == nil {
				continue
			}
			code := int64(e.Code)
			if code < -1<<31 || code > 1<<31-1 {
				code = -1
			}
			details = append(details, ErrorDetail{Code: int(code), ErrorCode: string(e.ErrorCode), Message: string(e.Message)})
		}
	}
	return string(f.TrackingID), details, len(details) > 0 || f.Type != "" || f.TrackingID != ""
}

// flexBool decodes a boolean sent as true/false or as a string ("true",
// "False"); null and "" leave it unset.
type flexBool struct {
	B     bool
	Valid bool
}

func (f *flexBool) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	s := string(b)
	if len(b) > 0 && b[0] == '"' {
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		s = strings.TrimSpace(s)
	}
	switch strings.ToLower(s) {
	case "null", "":
		*f = flexBool{}
	case "true":
		*f = flexBool{B: true, Valid: true}
	case "false":
		*f = flexBool{Valid: true}
	default:
		return fmt.Errorf("invalid boolean %.20q", s)
	}
	return nil
}

func (f flexBool) ptr() *bool {
	if !f.Valid {
		return nil
	}
	v := f.B
	return &v
}

type wireClientLink struct {
	Type                       flexString `json:"Type"`
	ClientEntityID             flexInt64  `json:"ClientEntityId"`
	ClientEntityNumber         flexString `json:"ClientEntityNumber"`
	ClientEntityName           flexString `json:"ClientEntityName"`
	ClientEntityCustomerNumber flexString `json:"ClientEntityCustomerNumber"`
	ManagingCustomerID         flexInt64  `json:"ManagingCustomerId"`
	ManagingCustomerNumber     flexString `json:"ManagingCustomerNumber"`
	ManagingCustomerName       flexString `json:"ManagingCustomerName"`
	Note                       flexString `json:"Note"`
	Name                       flexString `json:"Name"`
	InviterEmail               flexString `json:"InviterEmail"`
	InviterName                flexString `json:"InviterName"`
	InviterPhone               flexString `json:"InviterPhone"`
	IsBillToClient             flexBool   `json:"IsBillToClient"`
	StartDate                  flexTime   `json:"StartDate"`
	Status                     flexString `json:"Status"`
	LastModifiedDateTime       flexTime   `json:"LastModifiedDateTime"`
	LastModifiedByUserID       flexInt64  `json:"LastModifiedByUserId"`
	CustomerLinkPermission     flexString `json:"CustomerLinkPermission"`
}

type wireClientLinksResponse struct {
	ClientLinks json.RawMessage `json:"ClientLinks"`
}

// decodeClientLinks decodes a SearchClientLinks answer and says how many
// entries the page held (null ones included: the paging compares that with
// the page size, so a null entry never makes a full page look short and end
// the search early). An empty Type is
// an account link (the ClientLink reference says so); a customer link's
// client customer is its entity.
func decodeClientLinks(body []byte) ([]msads.ClientLink, int, error) {
	var r wireClientLinksResponse
	if err := unmarshal(body, &r); err != nil {
		return nil, 0, err
	}
	var list []*wireClientLink
	if err := resultList(r.ClientLinks, "ClientLinks", &list); err != nil {
		return nil, 0, err
	}
	out := make([]msads.ClientLink, 0, len(list))
	for _, w := range list {
		if w == nil {
			continue
		}
		if w.ClientEntityID == 0 || w.ManagingCustomerID == 0 {
			return nil, 0, errors.New("ClientLinks entry without ClientEntityId or ManagingCustomerId")
		}
		l := msads.ClientLink{
			Type:                       strings.TrimSpace(string(w.Type)),
			ClientEntityID:             int64(w.ClientEntityID),
			ClientEntityNumber:         string(w.ClientEntityNumber),
			ClientEntityName:           string(w.ClientEntityName),
			ClientEntityCustomerNumber: string(w.ClientEntityCustomerNumber),
			ManagingCustomerID:         int64(w.ManagingCustomerID),
			ManagingCustomerNumber:     string(w.ManagingCustomerNumber),
			ManagingCustomerName:       string(w.ManagingCustomerName),
			Status:                     string(w.Status),
			CustomerLinkPermission:     string(w.CustomerLinkPermission),
			IsBillToClient:             w.IsBillToClient.ptr(),
			StartDate:                  w.StartDate.ptr(),
			InviterEmail:               string(w.InviterEmail),
			InviterName:                string(w.InviterName),
			InviterPhone:               string(w.InviterPhone),
			Name:                       string(w.Name),
			Note:                       string(w.Note),
			LastModifiedTime:           w.LastModifiedDateTime.ptr(),
			LastModifiedByUserID:       int64(w.LastModifiedByUserID),
		}
		if l.Type == "" {
			l.Type = msads.LinkTypeAccount
		}
		if l.Type == msads.LinkTypeCustomer {
			l.ClientCustomerID = l.ClientEntityID
		}
		out = append(out, l)
	}
	return out, len(list), nil
}
