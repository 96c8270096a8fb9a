package middleware

import "net/http"

// RefusalCode names, in a word a program can match, why the gateway itself
// answered a request with an error. Every refusal body carries it as
// "code" beside the human "error" and "reason", which may be reworded at
// any time; the codes are a contract and are only ever added to.
type RefusalCode string

// The refusal codes, by the status they come with.
const (
	// CodeNoCredentials (401): the request carried no token and no session.
	CodeNoCredentials RefusalCode = "no_credentials"
	// CodeMalformedHeader (401): the Authorization header is neither
	// `Bearer <token>` nor `Basic base64(name:secret)`, and no other
	// credential let the request in.
	CodeMalformedHeader RefusalCode = "malformed_header"
	// CodeWrongToken (401): the token matches no loaded credential.
	CodeWrongToken RefusalCode = "wrong_token"
	// CodeTokenTooLong (401): the token is over the 72 bytes bcrypt checks.
	CodeTokenTooLong RefusalCode = "token_too_long"
	// CodeNoCredentialLoaded (401): the gateway has no valid credential
	// loaded, so it refuses every token (see /readyz).
	CodeNoCredentialLoaded RefusalCode = "no_credential_loaded"
	// CodeLockedOut (429, API and login): the client is locked out after
	// repeated wrong credentials; Retry-After says for how long.
	CodeLockedOut RefusalCode = "locked_out"
	// CodeClientBusy (429 for the API, 503 for the login form): the client
	// already has its share of token checks waiting.
	CodeClientBusy RefusalCode = "client_busy"
	// CodePoolBusy (503): too many token checks wait; this one was not made.
	CodePoolBusy RefusalCode = "pool_busy"
	// CodeCredentialsReloaded (503, login and websocket upgrade): the
	// credentials changed during the password check, or between the check
	// of a websocket's credential and its upgrade, and no longer hold it;
	// trying again checks against the new ones.
	CodeCredentialsReloaded RefusalCode = "credentials_reloaded"
	// CodeCrossOrigin (403): a request made with the session cookie came
	// from another origin (the CSRF check).
	CodeCrossOrigin RefusalCode = "cross_origin"
	// CodeCrossSite (403, login): a login form was posted from another site.
	CodeCrossSite RefusalCode = "cross_site"
	// CodeGuestForbidden (403): a guest session asked for something guests
	// may not do.
	CodeGuestForbidden RefusalCode = "guest_forbidden"
	// CodeGuestBadRequest (400): a guest's prompt or upload could not be
	// read, so it could not be checked.
	CodeGuestBadRequest RefusalCode = "guest_bad_request"
	// CodeGuestTooLarge (413): a guest's prompt is over the size the
	// gateway checks.
	CodeGuestTooLarge RefusalCode = "guest_too_large"
	// CodeGuestUnchecked (502): ComfyUI's answer could not be checked
	// before showing it to a guest.
	CodeGuestUnchecked RefusalCode = "guest_unchecked"
	// CodeGuestLoginLimited (429, login): too many guest logins from this
	// client; Retry-After says when the next one is allowed.
	CodeGuestLoginLimited RefusalCode = "guest_login_limited"
	// CodeLoginFormTooLarge (413): the login form is over 4 KiB.
	CodeLoginFormTooLarge RefusalCode = "login_form_too_large"
	// CodeLoginFormTimeout (408): the login form did not arrive in time.
	CodeLoginFormTimeout RefusalCode = "login_form_timeout"
	// CodeLoginFormUnreadable (400): the login form could not be parsed.
	CodeLoginFormUnreadable RefusalCode = "login_form_unreadable"
	// CodeUpstreamDown (502): ComfyUI could not be reached or closed the
	// connection before answering.
	CodeUpstreamDown RefusalCode = "upstream_down"
	// CodeUpstreamTimeout (504): ComfyUI did not answer in time.
	CodeUpstreamTimeout RefusalCode = "upstream_timeout"
	// CodeNotReady (503, /readyz): no credential is loaded or ComfyUI does
	// not answer.
	CodeNotReady RefusalCode = "not_ready"
	// CodeMethodNotAllowed (405): a health endpoint was called with a
	// method other than GET or HEAD.
	CodeMethodNotAllowed RefusalCode = "method_not_allowed"
	// CodeTooManyConnections (503): the gateway's connection limit is
	// reached; the connection was answered before its request was read.
	CodeTooManyConnections RefusalCode = "too_many_connections"
	// CodeQueueShare (429): the user already has --max-queued-prompts
	// prompts pending or running in ComfyUI's queue.
	CodeQueueShare RefusalCode = "queue_share"
	// CodeQueueUnchecked (502): ComfyUI's queue could not be read to count
	// the user's prompts, so the prompt was not queued.
	CodeQueueUnchecked RefusalCode = "queue_unchecked"
	// CodePromptUnreadable (400): a prompt the gateway must tag (queue
	// share) is not a JSON object with an object extra_data, or a POST
	// /queue or /history body it must read (OwnPrompts) is not a JSON
	// object with a list `delete`, or a mask upload's form or original_ref
	// it must check cannot be read.
	CodePromptUnreadable RefusalCode = "prompt_unreadable"
	// CodePromptTooLarge (413): a prompt the gateway must tag is over
	// MaxPromptBytes, or a POST /queue, /history or /interrupt body it
	// must read is over MaxEditBytes.
	CodePromptTooLarge RefusalCode = "prompt_too_large"
	// CodeOwnPromptsUnchecked (502): ComfyUI's queue or history could not
	// be read to tell the caller's prompts from other users', so nothing
	// was done or shown.
	CodeOwnPromptsUnchecked RefusalCode = "own_prompts_unchecked"
	// CodeOwnPromptsTooLarge (403): the caller's own prompts in ComfyUI's
	// queue or history are over the size a view of them holds
	// (MaxOwnViewBytes); other users' views are not affected.
	CodeOwnPromptsTooLarge RefusalCode = "own_prompts_too_large"
	// CodePromptIDTaken (409): a named user's prompt names, as its
	// prompt_id, the id of another user's prompt in ComfyUI's queue or
	// history.
	CodePromptIDTaken RefusalCode = "prompt_id_taken"
	// CodeNotYourOutput (404): a named user or guest asked /view for an
	// output or temp file that no prompt of theirs in ComfyUI's history
	// lists, or with a query that names no file. 404, as for a file that
	// does not exist, so that the answer does not tell whether another
	// user made it.
	CodeNotYourOutput RefusalCode = "not_your_output"
	// CodeNotYourFile (403): a named user's or guest's prompt names, in
	// a string input, an output or temp file that is not theirs
	// ("name.png [output]"), or gives one of ComfyUI's core loaders a path
	// leaving its input folder; or a mask upload's original_ref names
	// another user's output or temp file.
	CodeNotYourFile RefusalCode = "not_your_file"
	// CodeUserRegistry (502): the user could not be found in or added to
	// ComfyUI's user registry (--comfy-multi-user), so the request was
	// not passed on without its Comfy-User.
	CodeUserRegistry RefusalCode = "user_registry"
	// CodeUsersManaged (403): a client tried to create a ComfyUI user; with
	// --comfy-multi-user the gateway alone manages the registry.
	CodeUsersManaged RefusalCode = "users_managed"
)

// RefusalCodes lists every code, for documentation checks and clients.
var RefusalCodes = []RefusalCode{
	CodeNoCredentials, CodeMalformedHeader, CodeWrongToken, CodeTokenTooLong,
	CodeNoCredentialLoaded, CodeLockedOut, CodeClientBusy, CodePoolBusy,
	CodeCredentialsReloaded, CodeCrossOrigin, CodeCrossSite, CodeGuestForbidden,
	CodeGuestBadRequest, CodeGuestTooLarge, CodeGuestUnchecked, CodeGuestLoginLimited,
	CodeLoginFormTooLarge, CodeLoginFormTimeout, CodeLoginFormUnreadable,
	CodeUpstreamDown, CodeUpstreamTimeout, CodeNotReady, CodeMethodNotAllowed,
	CodeTooManyConnections, CodeQueueShare, CodeQueueUnchecked, CodePromptUnreadable,
	CodePromptTooLarge, CodeOwnPromptsUnchecked, CodeOwnPromptsTooLarge, CodePromptIDTaken, CodeUserRegistry, CodeUsersManaged,
	CodeNotYourOutput, CodeNotYourFile,
}

// Refuse is the one way the gateway writes a JSON refusal:
// `{"error": errText, "reason": reason, "code": code}` with status. It
// records the code for the access log, so no refusal goes without one.
func Refuse(w http.ResponseWriter, r *http.Request, status int, code RefusalCode, errText, reason string) {
	NoteCode(r, code)
	WriteJSON(w, status, refusalBody{Error: errText, Reason: reason, Code: code})
}

// NoteCode records code for the access log, for refusals written in
// another form (an HTML page, a raw connection answer).
func NoteCode(r *http.Request, code RefusalCode) {
	InfoFrom(r).Code = code
}

// refusalBody keeps the fields in the order ComfyUI-Login clients read.
type refusalBody struct {
	Error  string      `json:"error"`
	Reason string      `json:"reason"`
	Code   RefusalCode `json:"code"`
}
