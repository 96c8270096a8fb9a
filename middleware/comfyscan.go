package middleware

import (
	"bufio"
	"crypto/hmac"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strings"
)

// maxScannedValue bounds each value the queue and history readers keep to
// read it: an object key, a prompt id, an item's number, a tag. ComfyUI's
// are a few dozen bytes (a UUID, an integer, {"user", "mac"} for a user
// name of at most 64 characters); a chosen prompt_id is refused over
// MaxPromptIDBytes, which ComfyUI's \u escapes make at most 6 times longer.
// A longer value is read past without being kept: a key is then no key
// the readers look for, an id no readable id, a tag no tag.
var maxScannedValue = 4096

// maxJSONDepth is encoding/json's nesting limit, kept so that the readers
// refuse exactly the answers it refuses.
const maxJSONDepth = 10000

// scanBufferBytes is the read buffer of the queue and history readers.
const scanBufferBytes = 64 << 10

// ErrOwnViewTooLarge is returned when the caller's own items in a view of
// the queue or history are over the bound the view was given.
var ErrOwnViewTooLarge = errors.New("the caller's own prompts are over the size the gateway shows")

// errNotComfyShape marks an answer the readers refuse though encoding/json
// would read it: a list or entry key twice. ComfyUI writes Python dicts,
// whose keys are unique.
var errNotComfyShape = errors.New("not ComfyUI's shape")

// capture keeps the bytes a jsonStream consumes, up to max.
type capture struct {
	buf  []byte
	max  int
	over bool
}

func (c *capture) addByte(b byte) {
	if c.room(1) {
		c.buf = append(c.buf, b)
	}
}

func (c *capture) add(p []byte) {
	if c.room(len(p)) {
		c.buf = append(c.buf, p...)
	}
}

// room makes room for n more bytes, doubling the buffer up to max (append
// grows large buffers by a quarter, which would allocate several times
// the bound on the way to it); over max, the capture is dropped.
func (c *capture) room(n int) bool {
	if c.over {
		return false
	}
	if len(c.buf)+n > c.max {
		c.over, c.buf = true, nil
		return false
	}
	if len(c.buf)+n > cap(c.buf) {
		size := max(2*cap(c.buf), len(c.buf)+n, 512)
		buf := make([]byte, len(c.buf), min(size, c.max))
		copy(buf, c.buf)
		c.buf = buf
	}
	return true
}

// jsonStream reads JSON from a bufio.Reader one token at a time, checking
// it as encoding/json does (syntax, nesting depth) without keeping what it
// reads past: only the captures that are on keep bytes, each up to its
// own bound.
type jsonStream struct {
	r     *bufio.Reader
	depth int
	small *capture // a scalar being read (maxScannedValue)
	big   *capture // a view's own item (the view's budget)
}

func newJSONStream(r io.Reader) *jsonStream {
	return &jsonStream{r: bufio.NewReaderSize(r, scanBufferBytes)}
}

func (s *jsonStream) keep(p []byte) {
	if s.small != nil {
		s.small.add(p)
	}
	if s.big != nil {
		s.big.add(p)
	}
}

var errUnexpectedEnd = errors.New("unexpected end of JSON input")

// syntaxErr names the byte the reader did not expect.
func syntaxErr(c byte, where string) error {
	return fmt.Errorf("invalid character %q %s", c, where)
}

// peek returns the next byte without consuming it.
func (s *jsonStream) peek() (byte, error) {
	b, err := s.r.Peek(1)
	if len(b) == 0 {
		if err == io.EOF {
			return 0, errUnexpectedEnd
		}
		return 0, err
	}
	return b[0], nil
}

// take consumes the byte peek returned.
func (s *jsonStream) take() {
	b, _ := s.r.ReadByte()
	if s.small != nil {
		s.small.addByte(b)
	}
	if s.big != nil {
		s.big.addByte(b)
	}
}

// ws consumes whitespace and returns the next byte, not consumed.
func (s *jsonStream) ws() (byte, error) {
	for {
		c, err := s.peek()
		if err != nil {
			return 0, err
		}
		if c != ' ' && c != '\t' && c != '\n' && c != '\r' {
			return c, nil
		}
		s.take()
	}
}

// end checks that nothing but whitespace follows the top-level value.
func (s *jsonStream) end() error {
	c, err := s.ws()
	if err == errUnexpectedEnd {
		return nil
	}
	if err != nil {
		return err
	}
	return syntaxErr(c, "after top-level value")
}

// open consumes '{' or '[' (already peeked), within the depth limit.
func (s *jsonStream) open() error {
	s.take()
	if s.depth++; s.depth > maxJSONDepth {
		return errors.New("exceeded max depth")
	}
	return nil
}

// object reads an object, calling member with each key (decoded, and ok
// false when over maxScannedValue); member must read the value.
func (s *jsonStream) object(member func(key string, ok bool) error) error {
	if err := s.open(); err != nil {
		return err
	}
	c, err := s.ws()
	if err != nil {
		return err
	}
	if c == '}' {
		s.take()
		s.depth--
		return nil
	}
	for {
		if c != '"' {
			return syntaxErr(c, "looking for beginning of object key string")
		}
		key, ok, err := s.scalarString()
		if err != nil {
			return err
		}
		if c, err = s.ws(); err != nil {
			return err
		}
		if c != ':' {
			return syntaxErr(c, "after object key")
		}
		s.take()
		if err := member(key, ok); err != nil {
			return err
		}
		if c, err = s.ws(); err != nil {
			return err
		}
		switch c {
		case ',':
			s.take()
			if c, err = s.ws(); err != nil {
				return err
			}
		case '}':
			s.take()
			s.depth--
			return nil
		default:
			return syntaxErr(c, "after object key:value pair")
		}
	}
}

// array reads an array, calling elem with each index; elem must read the
// element.
func (s *jsonStream) array(elem func(i int) error) error {
	if err := s.open(); err != nil {
		return err
	}
	c, err := s.ws()
	if err != nil {
		return err
	}
	if c == ']' {
		s.take()
		s.depth--
		return nil
	}
	for i := 0; ; i++ {
		if err := elem(i); err != nil {
			return err
		}
		if c, err = s.ws(); err != nil {
			return err
		}
		switch c {
		case ',':
			s.take()
		case ']':
			s.take()
			s.depth--
			return nil
		default:
			return syntaxErr(c, "after array element")
		}
	}
}

// scalar reads one value keeping its bytes, up to maxScannedValue: raw is
// nil when the value was longer.
func (s *jsonStream) scalar() (raw []byte, err error) {
	if _, err := s.ws(); err != nil {
		return nil, err
	}
	c := &capture{max: maxScannedValue}
	s.small = c
	err = s.skip()
	s.small = nil
	if err != nil || c.over {
		return nil, err
	}
	return c.buf, nil
}

// scalarString reads a string (its quote peeked) and decodes it as
// encoding/json would; ok is false when it is over maxScannedValue.
func (s *jsonStream) scalarString() (string, bool, error) {
	c := &capture{max: maxScannedValue}
	s.small = c
	err := s.str()
	s.small = nil
	if err != nil || c.over {
		return "", false, err
	}
	var v string
	if json.Unmarshal(c.buf, &v) != nil {
		return "", false, nil
	}
	return v, true, nil
}

// str reads a string, its opening quote peeked, as encoding/json's
// scanner accepts it: no control characters, only JSON's escapes, any
// other byte (invalid UTF-8 included).
func (s *jsonStream) str() error {
	s.take()
	for {
		buf, err := s.r.Peek(1)
		if len(buf) == 0 {
			if err == io.EOF {
				return errUnexpectedEnd
			}
			return err
		}
		if n := s.r.Buffered(); n > 1 {
			buf, _ = s.r.Peek(n)
		}
		i := 0
		for i < len(buf) && buf[i] >= 0x20 && buf[i] != '"' && buf[i] != '\\' {
			i++
		}
		if i > 0 {
			s.keep(buf[:i])
			_, _ = s.r.Discard(i)
			continue
		}
		switch c := buf[0]; {
		case c == '"':
			s.take()
			return nil
		case c < 0x20:
			return syntaxErr(c, "in string literal")
		}
		s.take() // the backslash
		c, err := s.peek()
		if err != nil {
			return err
		}
		switch c {
		case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			s.take()
		case 'u':
			s.take()
			for k := 0; k < 4; k++ {
				h, err := s.peek()
				if err != nil {
					return err
				}
				if !isHexByte(h) {
					return syntaxErr(h, "in \\u hexadecimal character escape")
				}
				s.take()
			}
		default:
			return syntaxErr(c, "in string escape code")
		}
	}
}

func isHexByte(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// number reads a number, its first byte peeked.
func (s *jsonStream) number() error {
	c, _ := s.peek()
	if c == '-' {
		s.take()
		var err error
		if c, err = s.peek(); err != nil {
			return err
		}
	}
	switch {
	case c == '0':
		s.take()
	case isDigit(c):
		if err := s.digits(); err != nil {
			return err
		}
	default:
		return syntaxErr(c, "in numeric literal")
	}
	c, err := s.peek()
	if err != nil {
		return atEnd(err)
	}
	if c == '.' {
		s.take()
		if err := s.digits(); err != nil {
			return err
		}
		if c, err = s.peek(); err != nil {
			return atEnd(err)
		}
	}
	if c == 'e' || c == 'E' {
		s.take()
		if c, err = s.peek(); err != nil {
			return err
		}
		if c == '+' || c == '-' {
			s.take()
		}
		return s.digits()
	}
	return nil
}

// digits reads one or more digits.
func (s *jsonStream) digits() error {
	c, err := s.peek()
	if err != nil {
		return err
	}
	if !isDigit(c) {
		return syntaxErr(c, "in numeric literal")
	}
	for {
		s.take()
		if c, err = s.peek(); err != nil {
			return atEnd(err)
		}
		if !isDigit(c) {
			return nil
		}
	}
}

// atEnd lets a number end at the end of the input, where the caller then
// meets it, and passes on any other read error.
func atEnd(err error) error {
	if err == errUnexpectedEnd {
		return nil
	}
	return err
}

// literal reads true, false or null, its first byte peeked.
func (s *jsonStream) literal(word string) error {
	for i := 0; i < len(word); i++ {
		c, err := s.peek()
		if err != nil {
			return err
		}
		if c != word[i] {
			return syntaxErr(c, "in literal "+word)
		}
		s.take()
	}
	return nil
}

// skip reads one value, keeping nothing but what the captures on keep.
// Containers are followed with a stack of their kinds, not recursion, so
// that depth costs a byte each.
func (s *jsonStream) skip() error {
	var stack []byte
	for {
		c, err := s.ws()
		if err != nil {
			return err
		}
		switch {
		case c == '{' || c == '[':
			if err := s.open(); err != nil {
				return err
			}
			close := byte('}')
			if c == '[' {
				close = ']'
			}
			if c, err = s.ws(); err != nil {
				return err
			}
			if c == close {
				s.take()
				s.depth--
				break
			}
			stack = append(stack, close)
			if close == '}' {
				if err := s.memberKey(c); err != nil {
					return err
				}
			}
			continue
		case c == '"':
			err = s.str()
		case c == 't':
			err = s.literal("true")
		case c == 'f':
			err = s.literal("false")
		case c == 'n':
			err = s.literal("null")
		case c == '-' || isDigit(c):
			err = s.number()
		default:
			return syntaxErr(c, "looking for beginning of value")
		}
		if err != nil {
			return err
		}
		// A value is done: close the containers it ends, or go on to
		// the next element or member.
		for {
			if len(stack) == 0 {
				return nil
			}
			if c, err = s.ws(); err != nil {
				return err
			}
			top := stack[len(stack)-1]
			if c == top {
				s.take()
				s.depth--
				stack = stack[:len(stack)-1]
				continue
			}
			if c != ',' {
				return syntaxErr(c, "after container element")
			}
			s.take()
			if top == '}' {
				if c, err = s.ws(); err != nil {
					return err
				}
				if err := s.memberKey(c); err != nil {
					return err
				}
			}
			break
		}
	}
}

// memberKey reads a key and its colon, the key's first byte c peeked.
func (s *jsonStream) memberKey(c byte) error {
	if c != '"' {
		return syntaxErr(c, "looking for beginning of object key string")
	}
	if err := s.str(); err != nil {
		return err
	}
	c, err := s.ws()
	if err != nil {
		return err
	}
	if c != ':' {
		return syntaxErr(c, "after object key")
	}
	s.take()
	return nil
}

// QueueItem is what ScanQueue reads of one item of ComfyUI's GET /queue,
// a list [number, prompt_id, prompt, extra_data, outputs_to_execute].
type QueueItem struct {
	// Pending is true in queue_pending, false in queue_running; Index is
	// the item's place in its list.
	Pending bool
	Index   int
	// Members is how many members the item has (0 for a JSON null).
	Members int
	// ID is the prompt id; HasID is true when item[1] reads as a string
	// (a JSON null reads as ""), as encoding/json would.
	ID    string
	HasID bool
	// User is whose the item is when Tagged: its extra_data carries the
	// gateway's tag for User and ID, verified under the key.
	User   string
	Tagged bool
	// Number is item[0], raw; nil when absent or longer than a scanned
	// value may be.
	Number json.RawMessage
	// Raw is every member, raw, when a view captured the item.
	Raw []json.RawMessage
}

// queueScan configures scanQueue beyond ScanQueue.
type queueScan struct {
	// capture, when set, is asked after an item's id whether to keep the
	// item whole; the kept items share *budget bytes.
	capture func(it *QueueItem) bool
	budget  *int
}

// ScanQueue reads ComfyUI's GET /queue answer from r, calling fn with each
// item of queue_running and queue_pending in the answer's order. It keeps
// no more than one scanned value at a time (maxScannedValue): a prompt,
// however large, is read past, so its memory does not grow with the queue.
// fn sees items before the whole answer is read: on error, what fn
// gathered must be dropped. The answer is refused as encoding/json would
// refuse it (not JSON, not an object, a list missing, null or not a list
// of lists), and also when a list's key appears twice.
func ScanQueue(r io.Reader, key []byte, fn func(QueueItem) error) error {
	return scanQueue(r, key, queueScan{}, fn)
}

var queueLists = [2]string{"queue_running", "queue_pending"}

func scanQueue(r io.Reader, key []byte, o queueScan, fn func(QueueItem) error) error {
	s := newJSONStream(r)
	c, err := s.ws()
	if err != nil {
		return err
	}
	if c != '{' {
		if c == 'n' {
			return errors.New("queue_running or queue_pending is missing")
		}
		return errors.New("not a JSON object")
	}
	var seen [2]bool
	err = s.object(func(k string, ok bool) error {
		list := -1
		for i, name := range queueLists {
			// encoding/json matches a struct's field names so.
			if ok && strings.EqualFold(k, name) {
				list = i
			}
		}
		if list < 0 {
			return s.skip()
		}
		if seen[list] {
			return fmt.Errorf("%w: %s twice", errNotComfyShape, queueLists[list])
		}
		seen[list] = true
		c, err := s.ws()
		if err != nil {
			return err
		}
		switch c {
		case '[':
		case 'n':
			if err := s.literal("null"); err != nil {
				return err
			}
			return errors.New("queue_running or queue_pending is missing")
		default:
			return errors.New(queueLists[list] + " is not a list")
		}
		return s.array(func(j int) error {
			it := QueueItem{Pending: list == 1, Index: j}
			if err := s.queueItem(key, &it, o); err != nil {
				return err
			}
			return fn(it)
		})
	})
	if err != nil {
		return err
	}
	if !seen[0] || !seen[1] {
		return errors.New("queue_running or queue_pending is missing")
	}
	return s.end()
}

// queueItem reads one item into it.
func (s *jsonStream) queueItem(key []byte, it *QueueItem, o queueScan) error {
	c, err := s.ws()
	if err != nil {
		return err
	}
	if c == 'n' {
		return s.literal("null")
	}
	if c != '[' {
		return errors.New("a queue item is not a list")
	}
	var whole *capture
	var idRaw []byte
	var bounds [][2]int
	extra := tagReader{}
	outer := s.big
	err = s.array(func(k int) error {
		it.Members = k + 1
		switch k {
		case 0:
			raw, err := s.scalar()
			it.Number = raw
			return err
		case 1:
			raw, err := s.scalar()
			if err == nil && raw != nil {
				it.HasID = json.Unmarshal(raw, &it.ID) == nil
			}
			idRaw = raw
			if err == nil && it.HasID && it.Number != nil && o.capture != nil && o.capture(it) {
				whole = &capture{max: *o.budget}
				s.big = whole
			}
			return err
		}
		if whole != nil {
			if _, err := s.ws(); err != nil {
				return err
			}
		}
		start := 0
		if whole != nil {
			start = len(whole.buf)
		}
		var err error
		if k == 3 {
			err = extra.read(s)
		} else {
			err = s.skip()
		}
		if whole != nil {
			if whole.over {
				return ErrOwnViewTooLarge
			}
			bounds = append(bounds, [2]int{start, len(whole.buf)})
		}
		return err
	})
	s.big = outer
	if err != nil {
		return err
	}
	if it.Members >= 4 && it.HasID && extra.found && hmac.Equal([]byte(extra.tag.MAC), []byte(queueMAC(key, extra.tag.User, it.ID))) {
		it.User, it.Tagged = extra.tag.User, true
	}
	if whole != nil {
		*o.budget -= len(whole.buf)
		it.Raw = append(it.Raw, it.Number, idRaw)
		for _, b := range bounds {
			it.Raw = append(it.Raw, whole.buf[b[0]:b[1]])
		}
	}
	return nil
}

// tagReader reads an item's extra_data for the gateway's tag, as
// taggedItem reads it whole: the last QueueTagKey member decides, each
// decoded over the previous into one queueTag.
type tagReader struct {
	tag   queueTag
	found bool
}

func (t *tagReader) read(s *jsonStream) error {
	c, err := s.ws()
	if err != nil {
		return err
	}
	if c != '{' {
		return s.skip()
	}
	return s.object(func(k string, ok bool) error {
		if !ok || k != QueueTagKey {
			return s.skip()
		}
		raw, err := s.scalar()
		if err != nil {
			return err
		}
		t.found = raw != nil && json.Unmarshal(raw, &t.tag) == nil
		return nil
	})
}

// HistoryItem is what ScanHistory reads of one entry of ComfyUI's
// GET /history (or /history/{id}) answer, {id: {"prompt": [number, id,
// prompt, extra_data, outputs], "outputs": ..., "status": ...}, ...}.
type HistoryItem struct {
	// ID is the entry's key.
	ID string
	// User is whose the entry is when Tagged: its prompt's extra_data
	// carries the gateway's tag for User and the prompt's id, and that id
	// is ID.
	User   string
	Tagged bool
	// Files are the output and temp files the entry's outputs name, as
	// /view resolves them (ViewedFile): every object of at most
	// maxScannedValue bytes with a string "filename" in a list under a
	// node of "outputs" ({"1": {"images": [{"filename", "subfolder",
	// "type"}]}}), subfolder "" and type "output" when absent, as in a
	// /view query without them. Input files are left out (they are
	// shared), and so are names /view would serve no file for.
	Files []OutputFile
	// Raw is the entry's value, when a view captured it.
	Raw json.RawMessage
}

// historyScan configures scanHistory beyond ScanHistory.
type historyScan struct {
	// capture, when set, is asked with each entry's key whether to keep
	// its value whole; the kept values share *budget bytes.
	capture func(id string) bool
	budget  *int
}

// ScanHistory reads ComfyUI's GET /history or /history/{id} answer from
// r, calling fn with each entry in the answer's order. It keeps no more
// than one scanned value at a time (maxScannedValue): prompts and outputs
// are read past, so its memory does not grow with the history. An entry
// whose key is longer than maxScannedValue is read past without a call.
// fn sees entries before the whole answer is read: on error, what fn
// gathered must be dropped. An answer that is not one JSON object is
// refused; an entry that is not ComfyUI's shape is nobody's.
func ScanHistory(r io.Reader, key []byte, fn func(HistoryItem) error) error {
	return scanHistory(r, key, historyScan{}, fn)
}

func scanHistory(r io.Reader, key []byte, o historyScan, fn func(HistoryItem) error) error {
	s := newJSONStream(r)
	c, err := s.ws()
	if err != nil {
		return err
	}
	if c != '{' {
		return errors.New("not a JSON object")
	}
	err = s.object(func(id string, ok bool) error {
		if !ok {
			return s.skip()
		}
		it := HistoryItem{ID: id}
		var whole *capture
		if o.capture != nil && o.capture(id) {
			if _, err := s.ws(); err != nil {
				return err
			}
			whole = &capture{max: *o.budget}
			s.big = whole
		}
		err := s.historyEntry(key, &it)
		s.big = nil
		if err != nil {
			return err
		}
		if whole != nil {
			if whole.over {
				return ErrOwnViewTooLarge
			}
			*o.budget -= len(whole.buf)
			it.Raw = whole.buf
		}
		return fn(it)
	})
	if err != nil {
		return err
	}
	return s.end()
}

// historyEntry reads one entry's value as historyOwner reads it whole with
// encoding/json: the last member named "prompt" (in any case) decides, a
// prompt that is neither a list nor null makes the entry nobody's.
func (s *jsonStream) historyEntry(key []byte, it *HistoryItem) error {
	c, err := s.ws()
	if err != nil {
		return err
	}
	if c != '{' {
		return s.skip()
	}
	var prompt *QueueItem
	typeErr := false
	err = s.object(func(k string, ok bool) error {
		if ok && k == "outputs" {
			return s.outputFiles(&it.Files)
		}
		if !ok || !strings.EqualFold(k, "prompt") {
			return s.skip()
		}
		c, err := s.ws()
		if err != nil {
			return err
		}
		switch c {
		case '[':
			prompt = &QueueItem{}
			return s.queueItem(key, prompt, queueScan{})
		case 'n':
			prompt = nil
			return s.literal("null")
		}
		typeErr = true
		return s.skip()
	})
	if err != nil || typeErr || prompt == nil {
		return err
	}
	if prompt.Tagged && prompt.ID == it.ID {
		it.User, it.Tagged = prompt.User, true
	}
	return nil
}

// outputFiles reads a history entry's outputs, {node: {kind: [file, ...]}},
// appending the output and temp files it names (see HistoryItem.Files);
// any other shape is read past.
func (s *jsonStream) outputFiles(files *[]OutputFile) error {
	// each reads a value as an object, giving each member to member, or
	// reads past a value of any other kind.
	each := func(member func() error) error {
		c, err := s.ws()
		if err != nil {
			return err
		}
		if c != '{' {
			return s.skip()
		}
		return s.object(func(string, bool) error { return member() })
	}
	return each(func() error {
		return each(func() error {
			c, err := s.ws()
			if err != nil {
				return err
			}
			if c != '[' {
				return s.skip()
			}
			return s.array(func(int) error {
				c, err := s.ws()
				if err != nil {
					return err
				}
				if c != '{' {
					return s.skip()
				}
				raw, err := s.scalar()
				if err == nil && raw != nil {
					if f, ok := listedFile(raw); ok {
						*files = append(*files, f)
					}
				}
				return err
			})
		})
	})
}

// listedFile is the output or temp file one item of a node's output list
// names, raw, as the frontend asks /view for it; ok is false for an item
// that names none, or an input file.
func listedFile(raw []byte) (f OutputFile, ok bool) {
	var it struct {
		Filename  *string `json:"filename"`
		Subfolder *string `json:"subfolder"`
		Type      *string `json:"type"`
	}
	if json.Unmarshal(raw, &it) != nil || it.Filename == nil {
		return f, false
	}
	q := url.Values{"filename": {*it.Filename}}
	if it.Subfolder != nil {
		q.Set("subfolder", *it.Subfolder)
	}
	if it.Type != nil {
		q.Set("type", *it.Type)
	}
	if f, ok = ViewedFile(q); !ok || f.Type == "input" {
		return OutputFile{}, false
	}
	return f, true
}
