/* The compiled tier of the inbox normaliser: whole blocks of lines in, Arrow-ready columns out.
 *
 * `scan(block, first_line_no, fallback_key, earliest_us, latest_us)` reads every line of `block`
 * (split at '\n'; the block holds whole lines only) and, for each line, either ACCEPTS it (the
 * record parse_line would build, written to the output columns) or DECLINES it (its offsets are
 * returned, and Python normalises it: `normalize.parse_line`, see batch.py).
 *
 * It may decline anything; it must never accept differently from parse_line. So it declines, among
 * others: a line that is not strict UTF-8 or not strict JSON (RFC 8259: no NaN, no trailing comma),
 * nesting deeper than MAX_DEPTH, a duplicated key in any object whose keys the rules read (Python
 * keeps the last copy), an escape sequence in a key or string value the rules read, a field of an
 * unexpected JSON type, any value a rule would reject, and the rarer shapes (see `rules`).
 * tests/lib/test_request_logs_native.py holds every accepted row to parse_line's.
 *
 * Output columns follow batch.NUMBERED_SCHEMA without utc_date (computed in Python from ts).
 * Strings are Arrow layouts (int32 offsets + data), nullable columns carry an Arrow validity bitmap.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DEPTH 64
#define MAX_TOKENS ((int64_t)1 << 53) /* exclusive, as normalize.MAX_TOKENS */

/* ---- growable output buffers ------------------------------------------------------------- */

typedef struct {
    char *data;
    Py_ssize_t len, cap;
} Buf;

static int buf_reserve(Buf *b, Py_ssize_t more) {
    if (b->len + more <= b->cap) return 0;
    Py_ssize_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + more) cap *= 2;
    char *data = realloc(b->data, cap);
    if (!data) return -1;
    b->data = data;
    b->cap = cap;
    return 0;
}

static int buf_put(Buf *b, const void *src, Py_ssize_t n) {
    if (buf_reserve(b, n) < 0) return -1;
    memcpy(b->data + b->len, src, n);
    b->len += n;
    return 0;
}

static PyObject *buf_bytes(Buf *b) { return PyBytes_FromStringAndSize(b->data ? b->data : "", b->len); }

/* A nullable column: values (fixed width) or string data + int32 offsets, and a validity bitmap. */
typedef struct {
    Buf values; /* int64 / int32 / int8 values, or the string offsets */
    Buf data;   /* string bytes */
    Buf valid;  /* bitmap, one bit per row */
    int is_string;
    Py_ssize_t rows; /* a sparse column: rows written so far (see put_sparse) */
} Column;

/* ---- JSON values as the rules see them --------------------------------------------------- */

enum { T_ABSENT = 0, T_NULL, T_FALSE, T_TRUE, T_INT, T_FLOAT, T_STRING, T_OBJECT, T_ARRAY };

typedef struct {
    uint8_t type;
    uint8_t escaped; /* string: holds a backslash escape */
    uint8_t big;     /* integer: beyond int64 */
    int64_t i;
    const char *s; /* string: its characters (between the quotes); otherwise the whole value */
    Py_ssize_t n;
} Val;

/* The objects whose keys the rules read. Each has a fixed key list; a key found twice declines. */
enum { E_REQUEST_ID, E_TS, E_KEY_NAME, E_MODEL, E_ENDPOINT, E_STATUS, E_SOURCE_IP, E_LATENCY, E_RESPONSE, E_N };
enum { B_OBJECT, B_TYPE, B_ID, B_MODEL, B_CREATED, B_CREATED_AT, B_USAGE, B_CHOICES, B_RESPONSE, B_ERROR,
       B_DATA, B_TASK_ID, B_CODE, B_RESULT, B_TOOL_USAGE, B_N };
enum { C_ID, C_MODEL, C_CREATED, C_CREATED_AT, C_USAGE, C_TOOL_USAGE, C_N };
enum { U_PROMPT, U_COMPLETION, U_TOTAL, U_HIT, U_MISS, U_PROMPT_DET, U_COMPLETION_DET, U_INPUT, U_OUTPUT, U_INPUT_DET,
       U_OUTPUT_DET, U_CACHE_CREATION, U_CACHE_READ, U_CACHE_SPLIT, U_SERVER_TOOLS, U_N };
enum { D_CACHED, D_CACHED_CREATION, D_CACHE_WRITE, D_AUDIO, D_IMAGE, D_REASONING, D_THINKING, D_N };
enum { W_5M, W_1H, W_N };                /* usage.cache_creation (Anthropic's cache writes by duration) */
enum { X_WEB_SEARCH, X_WEB_FETCH, X_N }; /* usage.server_tool_use */
enum { T_TASK_ID, T_N };

static const char *const ENV_KEYS[E_N] = {"request_id", "ts", "key_name", "model", "endpoint", "status",
                                          "source_ip", "latency_ms", "response"};
static const char *const BODY_KEYS[B_N] = {"object", "type", "id", "model", "created", "created_at", "usage",
                                           "choices", "response", "error", "data", "task_id", "code", "result",
                                           "tool_usage"};
static const char *const CARRIED_KEYS[C_N] = {"id", "model", "created", "created_at", "usage", "tool_usage"};
static const char *const USAGE_KEYS[U_N] = {
    "prompt_tokens", "completion_tokens", "total_tokens", "prompt_cache_hit_tokens", "prompt_cache_miss_tokens",
    "prompt_tokens_details", "completion_tokens_details", "input_tokens", "output_tokens", "input_tokens_details",
    "output_tokens_details", "cache_creation_input_tokens", "cache_read_input_tokens", "cache_creation",
    "server_tool_use"};
static const char *const DETAIL_KEYS[D_N] = {"cached_tokens", "cached_creation_tokens", "cache_write_tokens",
                                             "audio_tokens", "image_tokens", "reasoning_tokens", "thinking_tokens"};
static const char *const SPLIT_KEYS[W_N] = {"ephemeral_5m_input_tokens", "ephemeral_1h_input_tokens"};
static const char *const TOOL_KEYS[X_N] = {"web_search_requests", "web_fetch_requests"};
/* a Responses object's tool_usage.web_search.num_requests (hosted tools, beside usage) */
static const char *const TOOL_USAGE_KEYS[1] = {"web_search"};
static const char *const WEB_SEARCH_KEYS[1] = {"num_requests"};
static const char *const DATA_KEYS[T_N] = {"task_id"};

typedef struct Level Level;
struct Level {
    int nkeys;
    const char *const *names;
    Py_ssize_t lens[16]; /* strlen of each name (no object read has more keys: asserted below) */
    Val *slots;
    Level **children; /* per key: the level its object value is read into, or NULL */
    int dirty;        /* slots were written since the last clear */
};

typedef struct {
    Val det[D_N];
} Details;

typedef struct {
    Val v[U_N];
    Details det[4]; /* prompt, completion, input, output */
    Val split[W_N], tools[X_N];
    Level level, det_level[4], split_level, tools_level;
    Level *children[U_N];
} Usage;

#define USAGE_LEVELS 7 /* a usage object, its four details, its cache_creation and its server_tool_use */

typedef struct {
    Val tool_usage[1], web_search[1];
    Level level, search_level;
    Level *children[1];
} ToolUsage;

#define LEVELS (4 + 2 * USAGE_LEVELS + 2 * 2)

typedef struct {
    Val env[E_N], body[B_N], carried[C_N], data[T_N];
    Usage body_usage, carried_usage;
    ToolUsage body_tools, carried_tools;
    Level env_level, body_level, carried_level, data_level;
    Level *env_children[E_N], *body_children[B_N], *carried_children[C_N];
    Level *levels[LEVELS]; /* every level above, for clear() */
} Line;

_Static_assert(E_N <= 16 && B_N <= 16 && C_N <= 16 && U_N <= 16 && D_N <= 16, "Level.lens holds 16 names");

static Level level_of(int nkeys, const char *const *names, Val *slots, Level **children) {
    Level level = {.nkeys = nkeys, .names = names, .slots = slots, .children = children};
    for (int k = 0; k < nkeys; k++) level.lens[k] = (Py_ssize_t)strlen(names[k]);
    return level;
}

static void wire_usage(Usage *u) {
    static const int det_key[4] = {U_PROMPT_DET, U_COMPLETION_DET, U_INPUT_DET, U_OUTPUT_DET};
    memset(u->children, 0, sizeof u->children);
    u->level = level_of(U_N, USAGE_KEYS, u->v, u->children);
    for (int k = 0; k < 4; k++) {
        u->det_level[k] = level_of(D_N, DETAIL_KEYS, u->det[k].det, NULL);
        u->children[det_key[k]] = &u->det_level[k];
    }
    u->split_level = level_of(W_N, SPLIT_KEYS, u->split, NULL);
    u->children[U_CACHE_SPLIT] = &u->split_level;
    u->tools_level = level_of(X_N, TOOL_KEYS, u->tools, NULL);
    u->children[U_SERVER_TOOLS] = &u->tools_level;
}

static void usage_levels(Usage *u, Level **out) {
    out[0] = &u->level;
    for (int k = 0; k < 4; k++) out[1 + k] = &u->det_level[k];
    out[5] = &u->split_level;
    out[6] = &u->tools_level;
}

static void wire_tools(ToolUsage *t) {
    t->level = level_of(1, TOOL_USAGE_KEYS, t->tool_usage, t->children);
    t->search_level = level_of(1, WEB_SEARCH_KEYS, t->web_search, NULL);
    t->children[0] = &t->search_level;
}

static void wire(Line *l) {
    memset(l->env_children, 0, sizeof l->env_children);
    memset(l->body_children, 0, sizeof l->body_children);
    memset(l->carried_children, 0, sizeof l->carried_children);
    l->env_level = level_of(E_N, ENV_KEYS, l->env, l->env_children);
    l->body_level = level_of(B_N, BODY_KEYS, l->body, l->body_children);
    l->carried_level = level_of(C_N, CARRIED_KEYS, l->carried, l->carried_children);
    l->data_level = level_of(T_N, DATA_KEYS, l->data, NULL);
    wire_usage(&l->body_usage);
    wire_usage(&l->carried_usage);
    wire_tools(&l->body_tools);
    wire_tools(&l->carried_tools);
    l->body_children[B_TOOL_USAGE] = &l->body_tools.level;
    l->carried_children[C_TOOL_USAGE] = &l->carried_tools.level;
    l->env_children[E_RESPONSE] = &l->body_level;
    l->body_children[B_USAGE] = &l->body_usage.level;
    l->body_children[B_RESPONSE] = &l->carried_level;
    l->body_children[B_DATA] = &l->data_level;
    l->carried_children[C_USAGE] = &l->carried_usage.level;
    Level *levels[LEVELS] = {&l->env_level, &l->body_level, &l->carried_level, &l->data_level};
    usage_levels(&l->body_usage, levels + 4);
    usage_levels(&l->carried_usage, levels + 4 + USAGE_LEVELS);
    Level *tools[4] = {&l->body_tools.level, &l->body_tools.search_level, &l->carried_tools.level,
                       &l->carried_tools.search_level};
    memcpy(levels + 4 + 2 * USAGE_LEVELS, tools, sizeof tools);
    memcpy(l->levels, levels, sizeof levels);
}

/* Every slot back to absent (only the levels the last line wrote to). */
static void clear(Line *l) {
    for (int k = 0; k < LEVELS; k++) {
        Level *level = l->levels[k];
        if (level->dirty) {
            memset(level->slots, 0, level->nkeys * sizeof(Val));
            level->dirty = 0;
        }
    }
}

/* ---- strict UTF-8 (what bytes.decode("utf-8") accepts) -------------------------------------- */

#define ONES ((uint64_t)0x0101010101010101ULL)
#define HIGHS ((uint64_t)0x8080808080808080ULL)

static inline uint64_t load8(const void *p) {
    uint64_t w;
    memcpy(&w, p, 8);
    return w;
}

/* Whether any byte of w is zero (the classic bit trick, exact when reporting "none"). */
static inline uint64_t has_zero(uint64_t w) { return (w - ONES) & ~w & HIGHS; }

static int utf8_ok(const unsigned char *s, Py_ssize_t n) {
    Py_ssize_t i = 0;
    while (i < n) {
        while (i + 8 <= n && !(load8(s + i) & HIGHS)) i += 8; /* eight ASCII bytes at a time */
        if (i >= n) break;
        unsigned char c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xC2 && c <= 0xDF) {
            if (i + 1 >= n || (s[i + 1] & 0xC0) != 0x80) return 0;
            i += 2;
        } else if (c >= 0xE0 && c <= 0xEF) {
            if (i + 2 >= n || (s[i + 1] & 0xC0) != 0x80 || (s[i + 2] & 0xC0) != 0x80) return 0;
            if (c == 0xE0 && s[i + 1] < 0xA0) return 0; /* overlong */
            if (c == 0xED && s[i + 1] > 0x9F) return 0; /* surrogate */
            i += 3;
        } else if (c >= 0xF0 && c <= 0xF4) {
            if (i + 3 >= n || (s[i + 1] & 0xC0) != 0x80 || (s[i + 2] & 0xC0) != 0x80 || (s[i + 3] & 0xC0) != 0x80)
                return 0;
            if (c == 0xF0 && s[i + 1] < 0x90) return 0; /* overlong */
            if (c == 0xF4 && s[i + 1] > 0x8F) return 0; /* beyond U+10FFFF */
            i += 4;
        } else {
            return 0;
        }
    }
    return 1;
}

/* ---- a strict JSON parser that records the values the rules read -------------------------- */

typedef struct {
    const char *p, *end;
} Parser;

static inline void skip_ws(Parser *ps) {
    while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r')) ps->p++;
}

static inline int is_hex(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }

/* A string at ps->p (the opening quote). Sets its characters' span and whether it has escapes. */
static int parse_string(Parser *ps, const char **s, Py_ssize_t *n, uint8_t *escaped) {
    const char *p = ps->p + 1;
    *escaped = 0;
    while (p < ps->end) {
        /* skip eight bytes at a time while none is a quote, a backslash or a control character */
        while (ps->end - p >= 8) {
            uint64_t w = load8(p);
            if (has_zero(w ^ (ONES * '"')) | has_zero(w ^ (ONES * '\\')) | ((w - ONES * 0x20) & ~w & HIGHS)) break;
            p += 8;
        }
        if (p >= ps->end) break;
        unsigned char c = (unsigned char)*p;
        if (c == '"') {
            *s = ps->p + 1;
            *n = p - (ps->p + 1);
            ps->p = p + 1;
            return 1;
        }
        if (c < 0x20) return 0; /* control characters must be escaped (json's strict mode) */
        if (c == '\\') {
            *escaped = 1;
            if (p + 1 >= ps->end) return 0;
            char e = p[1];
            if (e == 'u') {
                if (p + 5 >= ps->end || !is_hex(p[2]) || !is_hex(p[3]) || !is_hex(p[4]) || !is_hex(p[5])) return 0;
                p += 6;
            } else if (e == '"' || e == '\\' || e == '/' || e == 'b' || e == 'f' || e == 'n' || e == 'r' || e == 't') {
                p += 2;
            } else {
                return 0;
            }
            continue;
        }
        p++;
    }
    return 0;
}

/* A number: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)? ; integers keep their value. */
static int parse_number(Parser *ps, Val *v) {
    const char *p = ps->p, *start = p;
    int negative = 0;
    if (*p == '-') {
        negative = 1;
        p++;
    }
    if (p >= ps->end || *p < '0' || *p > '9') return 0;
    uint64_t mag = 0;
    int big = 0;
    if (*p == '0') {
        p++;
    } else {
        while (p < ps->end && *p >= '0' && *p <= '9') {
            unsigned d = (unsigned)(*p - '0');
            if (mag > (UINT64_MAX - d) / 10) big = 1;
            else mag = mag * 10 + d;
            p++;
        }
    }
    int is_float = 0;
    if (p < ps->end && *p == '.') {
        p++;
        if (p >= ps->end || *p < '0' || *p > '9') return 0;
        while (p < ps->end && *p >= '0' && *p <= '9') p++;
        is_float = 1;
    }
    if (p < ps->end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < ps->end && (*p == '+' || *p == '-')) p++;
        if (p >= ps->end || *p < '0' || *p > '9') return 0;
        while (p < ps->end && *p >= '0' && *p <= '9') p++;
        is_float = 1;
    }
    if (v) {
        v->s = start;
        v->n = p - start;
        if (is_float) {
            v->type = T_FLOAT;
        } else {
            v->type = T_INT;
            if (big || mag > (uint64_t)INT64_MAX) v->big = 1;
            else v->i = negative ? -(int64_t)mag : (int64_t)mag;
        }
    }
    ps->p = p;
    return 1;
}

static int parse_value(Parser *ps, Val *v, Level *level, int depth);

enum { BROKEN, MORE, CLOSED };

/* After an object member or an array element: MORE (past the comma), CLOSED (past `close`), or BROKEN. */
static int next_item(Parser *ps, char close) {
    skip_ws(ps);
    if (ps->p >= ps->end) return BROKEN;
    if (*ps->p == ',') {
        ps->p++;
        skip_ws(ps);
        return MORE;
    }
    if (*ps->p == close) {
        ps->p++;
        return CLOSED;
    }
    return BROKEN;
}

/* An object at ps->p. With a level, the keys it names are recorded (a duplicate fails the line). */
static int parse_object(Parser *ps, Level *level, int depth) {
    if (depth > MAX_DEPTH) return 0;
    if (level) level->dirty = 1;
    ps->p++; /* { */
    skip_ws(ps);
    if (ps->p < ps->end && *ps->p == '}') {
        ps->p++;
        return 1;
    }
    for (;;) {
        if (ps->p >= ps->end || *ps->p != '"') return 0;
        const char *key;
        Py_ssize_t key_n;
        uint8_t key_escaped;
        if (!parse_string(ps, &key, &key_n, &key_escaped)) return 0;
        Val *slot = NULL;
        Level *child = NULL;
        if (level) {
            if (key_escaped) return 0; /* "mod\u0065l" is "model": not worth telling apart here */
            for (int k = 0; k < level->nkeys; k++) {
                const char *name = level->names[k];
                if (level->lens[k] == key_n && name[0] == key[0] && memcmp(name, key, key_n) == 0) {
                    slot = &level->slots[k];
                    if (slot->type != T_ABSENT) return 0; /* duplicate key: Python keeps the last */
                    child = level->children ? level->children[k] : NULL;
                    break;
                }
            }
        }
        skip_ws(ps);
        if (ps->p >= ps->end || *ps->p != ':') return 0;
        ps->p++;
        skip_ws(ps);
        if (!parse_value(ps, slot, child, depth + 1)) return 0;
        int next = next_item(ps, '}');
        if (next != MORE) return next == CLOSED;
    }
}

static int parse_array(Parser *ps, int depth) {
    if (depth > MAX_DEPTH) return 0;
    ps->p++; /* [ */
    skip_ws(ps);
    if (ps->p < ps->end && *ps->p == ']') {
        ps->p++;
        return 1;
    }
    for (;;) {
        if (!parse_value(ps, NULL, NULL, depth + 1)) return 0;
        int next = next_item(ps, ']');
        if (next != MORE) return next == CLOSED;
    }
}

static int literal(Parser *ps, const char *word, Py_ssize_t n) {
    if (ps->end - ps->p < n || memcmp(ps->p, word, n) != 0) return 0;
    ps->p += n;
    return 1;
}

/* Any JSON value at ps->p; `v` (when given) records its type and span; `level` reads an object's keys. */
static int parse_value(Parser *ps, Val *v, Level *level, int depth) {
    if (ps->p >= ps->end) return 0;
    const char *start = ps->p;
    int type;
    switch (*ps->p) {
    case '{':
        if (!parse_object(ps, v ? level : NULL, depth)) return 0;
        type = T_OBJECT;
        break;
    case '[':
        if (!parse_array(ps, depth)) return 0;
        type = T_ARRAY;
        break;
    case '"': {
        const char *s;
        Py_ssize_t n;
        uint8_t escaped;
        if (!parse_string(ps, &s, &n, &escaped)) return 0;
        if (v) {
            v->type = T_STRING;
            v->s = s;
            v->n = n;
            v->escaped = escaped;
        }
        return 1;
    }
    case 't':
        if (!literal(ps, "true", 4)) return 0;
        type = T_TRUE;
        break;
    case 'f':
        if (!literal(ps, "false", 5)) return 0;
        type = T_FALSE;
        break;
    case 'n':
        if (!literal(ps, "null", 4)) return 0;
        type = T_NULL;
        break;
    default:
        return parse_number(ps, v);
    }
    if (v) {
        v->type = (uint8_t)type;
        v->s = start;
        v->n = ps->p - start;
    }
    return 1;
}

/* ---- the rules (normalize.parse_line's, for the forms accepted here) ------------------------ */

#define DECLINE 0
#define OK 1

typedef struct {
    const char *s;
    Py_ssize_t n; /* s == NULL: None */
} Text;

/* parse_line's optional text: absent/null/blank is None; not a string is a reject (declined). */
static int text_field(const Val *v, Text *out) {
    out->s = NULL;
    out->n = 0;
    if (v->type == T_ABSENT || v->type == T_NULL) return OK;
    if (v->type != T_STRING || v->escaped) return DECLINE;
    for (Py_ssize_t i = 0; i < v->n; i++) {
        unsigned char c = (unsigned char)v->s[i];
        if (c > 0x20 && c < 0x7F) { /* a visible ASCII character: str.strip() leaves it, so not blank */
            out->s = v->s;
            out->n = v->n;
            return OK;
        }
        if (c != ' ') return DECLINE; /* non-ASCII: whether it is Unicode whitespace is Python's call */
    }
    return OK; /* empty or only spaces: blank */
}

/* An id candidate (_body_id): an int becomes its decimal text, a non-blank string itself, else skipped. */
static int id_candidate(const Val *v, Text *out, char *digits) {
    out->s = NULL;
    out->n = 0;
    if (v->type == T_INT) {
        if (v->big) return DECLINE;
        out->n = sprintf(digits, "%lld", (long long)v->i);
        out->s = digits;
        return OK;
    }
    if (v->type == T_STRING) return text_field(v, out);
    return OK; /* null, absent, float, bool, object, array: not an id */
}

/* A token count (_count): absent/null is -1 (None); anything but an integer in [0, 2**53) declines. */
static int count_field(const Val *v, int64_t *out) {
    *out = -1;
    if (v->type == T_ABSENT || v->type == T_NULL) return OK;
    if (v->type != T_INT || v->big || v->i < 0 || v->i >= MAX_TOKENS) return DECLINE;
    *out = v->i;
    return OK;
}

static int64_t days_from_civil(int64_t y, int64_t m, int64_t d) {
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static int digits_at(const char *s, int n, int *out) {
    int value = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return 0;
        value = value * 10 + (s[i] - '0');
    }
    *out = value;
    return 1;
}

/* YYYY-MM-DDTHH:MM:SS[.fff|.ffffff](Z|+HH:MM|-HH:MM): what datetime.fromisoformat reads the same way. */
static int iso_us(const char *s, Py_ssize_t n, int64_t *out) {
    int y, mo, d, h, mi, sec, frac = 0, oh = 0, om = 0;
    if (n < 20 || s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' || s[16] != ':') return 0;
    if (!digits_at(s, 4, &y) || !digits_at(s + 5, 2, &mo) || !digits_at(s + 8, 2, &d) || !digits_at(s + 11, 2, &h) ||
        !digits_at(s + 14, 2, &mi) || !digits_at(s + 17, 2, &sec))
        return 0;
    Py_ssize_t i = 19;
    if (s[i] == '.') {
        Py_ssize_t j = i + 1;
        while (j < n && s[j] >= '0' && s[j] <= '9') j++;
        int count = (int)(j - i - 1);
        if (count != 3 && count != 6) return 0;
        if (!digits_at(s + i + 1, count, &frac)) return 0;
        if (count == 3) frac *= 1000;
        i = j;
    }
    int sign = 0;
    if (i + 1 == n && s[i] == 'Z') {
        sign = 0;
    } else if (i + 6 == n && (s[i] == '+' || s[i] == '-') && s[i + 3] == ':') {
        sign = s[i] == '+' ? 1 : -1;
        if (!digits_at(s + i + 1, 2, &oh) || !digits_at(s + i + 4, 2, &om) || oh > 23 || om > 59) return 0;
    } else {
        return 0;
    }
    static const int month_days[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (y < 1 || mo < 1 || mo > 12 || d < 1 || h > 23 || mi > 59 || sec > 59) return 0;
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (d > month_days[mo - 1] + (mo == 2 && leap)) return 0;
    int64_t seconds = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec - sign * (oh * 3600 + om * 60);
    *out = seconds * 1000000 + frac;
    return 1;
}

/* _timestamp: envelope ts, else the body's created, else created_at; integers are unix seconds. */
static int timestamp_us(const Val *ts, const Val *created, const Val *created_at, int64_t *out) {
    const Val *v = ts;
    if (v->type == T_ABSENT || v->type == T_NULL) v = created;
    if (v->type == T_ABSENT || v->type == T_NULL) v = created_at;
    if (v->type == T_INT) {
        if (v->big || v->i < 0 || v->i > 253402300799LL) return DECLINE; /* beyond 9999-12-31 */
        *out = v->i * 1000000;
        return OK;
    }
    if (v->type == T_FLOAT) { /* 1772611588.0, as the openai SDK writes Responses' created_at; nothing else */
        Py_ssize_t dot = 0;
        while (dot < v->n && v->s[dot] >= '0' && v->s[dot] <= '9') dot++;
        if (dot == 0 || dot > 12 || dot + 1 >= v->n || v->s[dot] != '.') return DECLINE;
        for (Py_ssize_t i = dot + 1; i < v->n; i++)
            if (v->s[i] != '0') return DECLINE;
        int64_t seconds = 0;
        for (Py_ssize_t i = 0; i < dot; i++) seconds = seconds * 10 + (v->s[i] - '0');
        if (seconds > 253402300799LL) return DECLINE;
        *out = seconds * 1000000;
        return OK;
    }
    if (v == ts && v->type == T_STRING && !v->escaped) return iso_us(v->s, v->n, out) ? OK : DECLINE;
    return DECLINE;
}

static int is_task_segment(const char *s, Py_ssize_t n) {
    static const char *const SEGMENTS[] = {"mj", "suno", "kling", "runway", "runwayml", "luma", "pika", "videos",
                                           "images"}; /* normalize.TASK_PATH_SEGMENTS */
    char lower[16];
    if (n == 0 || n > 15) return 0;
    for (Py_ssize_t i = 0; i < n; i++) lower[i] = (s[i] >= 'A' && s[i] <= 'Z') ? (char)(s[i] + 32) : s[i];
    for (size_t k = 0; k < sizeof SEGMENTS / sizeof *SEGMENTS; k++)
        if ((Py_ssize_t)strlen(SEGMENTS[k]) == n && memcmp(SEGMENTS[k], lower, n) == 0) return 1;
    return 0;
}

/* normalize.endpoint_is_task, for ASCII endpoints (-1: not ASCII, Python decides). */
static int endpoint_is_task(Text e) {
    Py_ssize_t n = e.n;
    for (Py_ssize_t i = 0; i < n; i++) {
        if ((unsigned char)e.s[i] >= 0x80) return -1;
        if (e.s[i] == '?') {
            n = i;
            break;
        }
    }
    const char *p = e.s;
    for (Py_ssize_t i = 0; i + 2 < n; i++) {
        if (p[i] == ':' && p[i + 1] == '/' && p[i + 2] == '/') {
            p += i + 3;
            n -= i + 3;
            break;
        }
    }
    Py_ssize_t seg = 0;
    for (Py_ssize_t i = 0; i <= n; i++) {
        if (i == n || p[i] == '/') {
            if (is_task_segment(p + seg, i - seg)) return 1;
            seg = i + 1;
        }
    }
    return 0;
}

static int eq(const Val *v, const char *word) {
    Py_ssize_t n = (Py_ssize_t)strlen(word);
    return v->type == T_STRING && !v->escaped && v->n == n && memcmp(v->s, word, n) == 0;
}

enum { S_CHAT, S_CHUNK, S_RESPONSE, S_RESPONSE_COMPLETED, S_MESSAGE, S_MESSAGE_DELTA, S_TASK };
static const char *const SHAPES[] = {"chat_completion", "chat_completion_chunk", "response", "response_completed",
                                     "anthropic_message", "anthropic_message_delta", "task"};

#define NTOKENS 13          /* normalize.USAGE_FIELDS */
#define TOKEN_WEB_SEARCH 11 /* its web_search_requests */

typedef struct {
    Text request_id, key_name, model, endpoint, source_ip, response_id;
    int64_t ts_us, status, latency; /* -1: None */
    int shape;
    int known; /* usage_status: 1 known, 0 unknown, 2 per_call */
    int64_t tokens[NTOKENS]; /* -1: None */
    const Val *usage; /* NULL: no raw usage */
} Row;

static int is_object_key(int k) {
    return k == U_PROMPT_DET || k == U_COMPLETION_DET || k == U_INPUT_DET || k == U_OUTPUT_DET || k == U_CACHE_SPLIT ||
           k == U_SERVER_TOOLS;
}

/* Validate every count a usage object may hold (stricter than parse_line, which reads only the shape's). */
/* The counts of one object's slots (-1: absent); all absent when the object itself is not there. */
static int counts_of(const Val *object, const Val *slots, int n, int64_t *out) {
    if (object->type != T_OBJECT) {
        for (int k = 0; k < n; k++) out[k] = -1;
        return object->type == T_ABSENT || object->type == T_NULL;
    }
    for (int k = 0; k < n; k++)
        if (!count_field(&slots[k], &out[k])) return DECLINE;
    return OK;
}

static int usage_counts(const Usage *u, int64_t c[U_N], int64_t det[4][D_N], int64_t split[W_N], int64_t tools[X_N]) {
    static const int det_key[4] = {U_PROMPT_DET, U_COMPLETION_DET, U_INPUT_DET, U_OUTPUT_DET};
    for (int k = 0; k < U_N; k++)
        if (!is_object_key(k) && !count_field(&u->v[k], &c[k])) return DECLINE;
    for (int d = 0; d < 4; d++)
        if (!counts_of(&u->v[det_key[d]], u->det[d].det, D_N, det[d])) return DECLINE;
    return counts_of(&u->v[U_CACHE_SPLIT], u->split, W_N, split) &&
           counts_of(&u->v[U_SERVER_TOOLS], u->tools, X_N, tools);
}

static int64_t or_zero(int64_t v) { return v < 0 ? 0 : v; }

/* normalize._larger: one count reported under two names (-1: not reported). */
static int64_t larger(int64_t a, int64_t b) { return a > b ? a : b; }

/* _read_usage for the token shapes: known tokens, or unknown (prompt or completion missing). */
static int tokens_of(int shape, const Usage *u, Row *row) {
    int64_t c[U_N], det[4][D_N], split[W_N], tools[X_N];
    if (!usage_counts(u, c, det, split, tools)) return DECLINE;
    int64_t prompt, completion, total = c[U_TOTAL], cached, cache_write, reasoning;
    int64_t w5 = -1, w1 = -1, audio = -1, image = -1, search = -1, fetch = -1;
    if (shape != S_MESSAGE && shape != S_MESSAGE_DELTA) { /* OpenAI semantics: the prompt includes the cache */
        int chat = shape == S_CHAT || shape == S_CHUNK;
        const int64_t *d = det[chat ? 0 : 2];
        prompt = c[chat ? U_PROMPT : U_INPUT];
        completion = c[chat ? U_COMPLETION : U_OUTPUT];
        cached = d[D_CACHED];
        cache_write = larger(d[D_CACHE_WRITE], d[D_CACHED_CREATION]);
        audio = d[D_AUDIO];
        image = d[D_IMAGE];
        if (chat && (c[U_HIT] >= 0 || c[U_MISS] >= 0)) { /* DeepSeek's hit / miss counts */
            int64_t hits = c[U_HIT], misses = c[U_MISS];
            if (misses >= 0 && prompt >= 0) {
                if (misses > prompt || (hits >= 0 && hits + misses != prompt)) return DECLINE;
                hits = prompt - misses;
            }
            cached = larger(cached, hits);
        }
        reasoning = det[chat ? 1 : 3][D_REASONING];
    } else { /* Anthropic: input_tokens excludes the cache */
        cached = c[U_CACHE_READ];
        cache_write = c[U_CACHE_CREATION];
        w5 = split[W_5M];
        w1 = split[W_1H];
        if (cache_write < 0) cache_write = or_zero(w5) + or_zero(w1);
        if (cache_write >= MAX_TOKENS) return DECLINE;
        search = tools[X_WEB_SEARCH];
        fetch = tools[X_WEB_FETCH];
        completion = c[U_OUTPUT];
        reasoning = det[3][D_THINKING];
        prompt = c[U_INPUT] < 0 ? -1 : c[U_INPUT] + or_zero(cache_write) + or_zero(cached);
        if (prompt >= MAX_TOKENS) return DECLINE;
    }
    if (prompt < 0 || completion < 0) {
        row->known = 0;
        return OK;
    }
    cached = or_zero(cached);
    cache_write = or_zero(cache_write);
    reasoning = or_zero(reasoning);
    if ((total >= 0 && total != prompt + completion) || cached + cache_write > prompt || reasoning > completion ||
        or_zero(w5) + or_zero(w1) > cache_write || or_zero(audio) + or_zero(image) > prompt)
        return DECLINE;
    row->known = 1;
    int64_t t[NTOKENS] = {prompt, completion, prompt + completion, cached, cache_write, reasoning,
                          prompt - cached - cache_write, w5, w1, audio, image, search, fetch};
    memcpy(row->tokens, t, sizeof t);
    return OK;
}

/* _hosted_web_searches: a Responses object's tool_usage.web_search.num_requests (-1: not reported). */
static int web_searches(const Val *tool_usage, const ToolUsage *t, int64_t *out) {
    *out = -1;
    if (tool_usage->type == T_ABSENT || tool_usage->type == T_NULL) return OK;
    if (tool_usage->type != T_OBJECT) return DECLINE;
    const Val *search = &t->tool_usage[0];
    if (search->type == T_ABSENT || search->type == T_NULL) return OK;
    if (search->type != T_OBJECT) return DECLINE;
    return count_field(&t->web_search[0], out);
}

static int rules(Line *l, Text fallback_key, int64_t earliest_us, int64_t latest_us, Row *row, char *digits) {
    const Val *env = l->env, *body = l->body;
    if (env[E_RESPONSE].type != T_OBJECT) return DECLINE;
    if (!text_field(&env[E_ENDPOINT], &row->endpoint) || !text_field(&env[E_SOURCE_IP], &row->source_ip) ||
        !text_field(&env[E_KEY_NAME], &row->key_name) || !text_field(&env[E_REQUEST_ID], &row->request_id) ||
        !text_field(&env[E_MODEL], &row->model))
        return DECLINE;
    const Val *status = &env[E_STATUS], *latency = &env[E_LATENCY];
    row->status = -1;
    if (status->type == T_INT && !status->big && status->i >= 100 && status->i <= 599) row->status = status->i;
    else if (status->type != T_ABSENT && status->type != T_NULL) return DECLINE;
    row->latency = -1;
    if (latency->type == T_INT && !latency->big && latency->i >= 0 && latency->i < MAX_TOKENS) row->latency = latency->i;
    else if (latency->type != T_ABSENT && latency->type != T_NULL) return DECLINE;

    /* _detect_shape, in its order; the rarer branches are declined */
    const Val *obj = &body[B_OBJECT], *event = &body[B_TYPE];
    if ((obj->type != T_ABSENT && obj->type != T_NULL && obj->type != T_STRING) ||
        (event->type != T_ABSENT && event->type != T_NULL && event->type != T_STRING))
        return DECLINE;
    if ((obj->type == T_STRING && obj->escaped) || (event->type == T_STRING && event->escaped)) return DECLINE;
    /* the object holding id / model / created / usage: the body, or the one a response.completed carries */
    const Val *carried_created = &body[B_CREATED], *carried_created_at = &body[B_CREATED_AT];
    const Val *carried_id = &body[B_ID], *carried_model = &body[B_MODEL], *carried_usage = &body[B_USAGE];
    if (eq(obj, "chat.completion")) row->shape = S_CHAT;
    else if (eq(obj, "chat.completion.chunk")) row->shape = S_CHUNK;
    else if (eq(obj, "response")) row->shape = S_RESPONSE;
    else if (eq(event, "response.completed")) {
        if (body[B_RESPONSE].type != T_OBJECT) return DECLINE;
        row->shape = S_RESPONSE_COMPLETED; /* id, model, created and usage are the carried object's */
        carried_id = &l->carried[C_ID];
        carried_model = &l->carried[C_MODEL];
        carried_created = &l->carried[C_CREATED];
        carried_created_at = &l->carried[C_CREATED_AT];
        carried_usage = &l->carried[C_USAGE];
    } else if (eq(event, "message")) row->shape = S_MESSAGE;
    else if (eq(event, "message_delta")) row->shape = S_MESSAGE_DELTA;
    else if (eq(event, "message_start") || body[B_ERROR].type != T_ABSENT) return DECLINE;
    else if (body[B_CHOICES].type != T_ABSENT && body[B_CHOICES].type != T_NULL) return DECLINE;
    else {
        int task = 0;
        if (row->endpoint.s) {
            task = endpoint_is_task(row->endpoint);
            if (task < 0) return DECLINE;
        }
        if (!task && (body[B_TASK_ID].type != T_ABSENT ||
                      (body[B_DATA].type == T_OBJECT && l->data[T_TASK_ID].type != T_ABSENT) ||
                      (body[B_CODE].type != T_ABSENT && body[B_RESULT].type != T_ABSENT)))
            task = 1;
        if (!task) return DECLINE;
        row->shape = S_TASK;
    }

    /* _body_id */
    Text id = {NULL, 0};
    if (row->shape == S_TASK) {
        const Val *candidates[4] = {&body[B_TASK_ID], body[B_DATA].type == T_OBJECT ? &l->data[T_TASK_ID] : NULL,
                                    &body[B_RESULT], &body[B_ID]};
        for (int k = 0; k < 4 && !id.s; k++)
            if (candidates[k] && !id_candidate(candidates[k], &id, digits)) return DECLINE;
        if (!id.s && body[B_DATA].type == T_STRING && !text_field(&body[B_DATA], &id)) return DECLINE;
    } else if (row->shape != S_MESSAGE_DELTA) {
        if (!id_candidate(carried_id, &id, digits)) return DECLINE;
    }
    row->response_id = id;

    if (!row->key_name.s && fallback_key.s) row->key_name = fallback_key;
    if (!row->request_id.s) row->request_id = id;
    if (!row->model.s) { /* _body_text: a non-string model in the body is ignored, not rejected */
        if (carried_model->type == T_STRING && !text_field(carried_model, &row->model)) return DECLINE;
    }
    if (!row->key_name.s || !row->request_id.s || !row->model.s) return DECLINE;
    if (!timestamp_us(&env[E_TS], carried_created, carried_created_at, &row->ts_us)) return DECLINE;
    if (row->ts_us < earliest_us || row->ts_us > latest_us) return DECLINE;

    /* usage: the body's for message_delta (the carried object is the body then anyway) */
    const Val *usage = carried_usage;
    const Usage *u = usage == &l->carried[C_USAGE] ? &l->carried_usage : &l->body_usage;
    row->usage = (usage->type == T_ABSENT || usage->type == T_NULL) ? NULL : usage;
    for (int k = 0; k < NTOKENS; k++) row->tokens[k] = -1;
    if (row->shape == S_TASK) {
        row->known = 2;
        return OK;
    }
    if (!row->usage) {
        row->known = 0;
        return OK;
    }
    if (usage->type != T_OBJECT) return DECLINE;
    if (!tokens_of(row->shape, u, row)) return DECLINE;
    if (row->shape == S_RESPONSE || row->shape == S_RESPONSE_COMPLETED) {
        int completed = row->shape == S_RESPONSE_COMPLETED;
        int64_t searches;
        if (!web_searches(completed ? &l->carried[C_TOOL_USAGE] : &body[B_TOOL_USAGE],
                          completed ? &l->carried_tools : &l->body_tools, &searches))
            return DECLINE;
        if (row->known == 1 && searches >= 0) row->tokens[TOKEN_WEB_SEARCH] = searches;
    }
    return OK;
}

/* ---- output ---------------------------------------------------------------------------------- */

enum { COL_REQUEST_ID, COL_KEY_NAME, COL_MODEL, COL_ENDPOINT, COL_SOURCE_IP, COL_RESPONSE_ID, COL_RAW_USAGE,
       COL_TS, COL_STATUS, COL_LATENCY, COL_SHAPE, COL_USAGE_STATUS, COL_LINE_NO, COL_TOKENS, NCOLS = COL_TOKENS + NTOKENS };
static const char *const COLUMN_NAMES[NCOLS] = {
    "request_id", "key_name", "model", "endpoint", "source_ip", "response_id", "raw_usage_json", "ts", "status",
    "latency_ms", "usage_shape", "usage_status", "line_no", "prompt_tokens", "completion_tokens", "total_tokens",
    "cached_tokens", "cache_write_tokens", "reasoning_tokens", "uncached_prompt_tokens", "cache_write_5m_tokens",
    "cache_write_1h_tokens", "audio_prompt_tokens", "image_prompt_tokens", "web_search_requests", "web_fetch_requests"};

static int set_valid(Column *c, Py_ssize_t row, int valid) {
    if ((row & 7) == 0) {
        unsigned char zero = 0;
        if (buf_put(&c->valid, &zero, 1) < 0) return -1;
    }
    if (valid) c->valid.data[row >> 3] |= (unsigned char)(1u << (row & 7));
    return 0;
}

static int put_text(Column *c, Py_ssize_t row, Text t) {
    if (row == 0) {
        int32_t zero = 0;
        if (buf_put(&c->values, &zero, 4) < 0) return -1;
    }
    if (t.s && buf_put(&c->data, t.s, t.n) < 0) return -1;
    if (c->data.len > INT32_MAX) return -1; /* beyond int32 offsets: the caller's block is too big */
    int32_t end = (int32_t)c->data.len;
    if (buf_put(&c->values, &end, 4) < 0) return -1;
    return set_valid(c, row, t.s != NULL);
}

static int has_whitespace(const char *s, Py_ssize_t n) {
    Py_ssize_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w = load8(s + i);
        if (has_zero(w ^ (ONES * ' ')) | has_zero(w ^ (ONES * '\t')) | has_zero(w ^ (ONES * '\n')) |
            has_zero(w ^ (ONES * '\r')))
            return 1;
    }
    for (; i < n; i++)
        if (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r') return 1;
    return 0;
}

/* The usage object without whitespace outside its strings (the same JSON value). */
static int put_compact(Column *c, Py_ssize_t row, const Val *v) {
    if (!v) return put_text(c, row, (Text){NULL, 0});
    if (!has_whitespace(v->s, v->n)) return put_text(c, row, (Text){v->s, v->n});
    if (buf_reserve(&c->data, v->n) < 0) return -1;
    char *out = c->data.data + c->data.len;
    Py_ssize_t k = 0;
    int in_string = 0;
    for (Py_ssize_t i = 0; i < v->n; i++) {
        char ch = v->s[i];
        if (in_string) {
            out[k++] = ch;
            if (ch == '\\') out[k++] = v->s[++i];
            else if (ch == '"') in_string = 0;
        } else if (ch != ' ' && ch != '\t' && ch != '\n' && ch != '\r') {
            out[k++] = ch;
            if (ch == '"') in_string = 1;
        }
    }
    if (row == 0) {
        int32_t zero = 0;
        if (buf_put(&c->values, &zero, 4) < 0) return -1;
    }
    c->data.len += k; /* `out` was written in place, just past the column's data */
    if (c->data.len > INT32_MAX) return -1;
    int32_t end = (int32_t)c->data.len;
    if (buf_put(&c->values, &end, 4) < 0) return -1;
    return set_valid(c, row, 1);
}

static int put_int(Column *c, Py_ssize_t row, int64_t v, int width) {
    int valid = v >= 0;
    if (!valid) v = 0;
    if (width == 8) {
        if (buf_put(&c->values, &v, 8) < 0) return -1;
    } else if (width == 4) {
        int32_t x = (int32_t)v;
        if (buf_put(&c->values, &x, 4) < 0) return -1;
    } else {
        int8_t x = (int8_t)v;
        if (buf_put(&c->values, &x, 1) < 0) return -1;
    }
    return set_valid(c, row, valid);
}

/* A sparse column (the usage splits: NULL on nearly every row) is written only where it has a value:
 * the NULL rows before it are filled in at once, the last ones by the end of the block. */
static int pad_nulls(Column *c, Py_ssize_t upto) {
    if (upto <= c->rows) return 0;
    Py_ssize_t more = (upto - c->rows) * 8, bytes = (upto + 7) / 8;
    if (buf_reserve(&c->values, more) < 0) return -1;
    memset(c->values.data + c->values.len, 0, more);
    c->values.len += more;
    if (bytes > c->valid.len) {
        if (buf_reserve(&c->valid, bytes - c->valid.len) < 0) return -1;
        memset(c->valid.data + c->valid.len, 0, bytes - c->valid.len);
        c->valid.len = bytes;
    }
    c->rows = upto;
    return 0;
}

static int put_sparse(Column *c, Py_ssize_t row, int64_t v) {
    if (pad_nulls(c, row) < 0 || put_int(c, row, v, 8) < 0) return -1;
    c->rows = row + 1;
    return 0;
}

#define DENSE_TOKENS 7 /* the buckets; the splits after them are sparse */

static int put_row(Column *cols, Py_ssize_t row, const Row *r, int64_t line_no) {
    if (put_text(&cols[COL_REQUEST_ID], row, r->request_id) < 0 || put_text(&cols[COL_KEY_NAME], row, r->key_name) < 0 ||
        put_text(&cols[COL_MODEL], row, r->model) < 0 || put_text(&cols[COL_ENDPOINT], row, r->endpoint) < 0 ||
        put_text(&cols[COL_SOURCE_IP], row, r->source_ip) < 0 ||
        put_text(&cols[COL_RESPONSE_ID], row, r->response_id) < 0 || put_compact(&cols[COL_RAW_USAGE], row, r->usage) < 0)
        return -1;
    /* ts may precede 1970 in principle, so it is written as is (never None here) */
    if (buf_put(&cols[COL_TS].values, &r->ts_us, 8) < 0 || set_valid(&cols[COL_TS], row, 1) < 0) return -1;
    if (put_int(&cols[COL_STATUS], row, r->status, 4) < 0 || put_int(&cols[COL_LATENCY], row, r->latency, 8) < 0 ||
        put_int(&cols[COL_SHAPE], row, r->shape, 1) < 0 || put_int(&cols[COL_USAGE_STATUS], row, r->known, 1) < 0 ||
        put_int(&cols[COL_LINE_NO], row, line_no, 8) < 0)
        return -1;
    for (int k = 0; k < DENSE_TOKENS; k++)
        if (put_int(&cols[COL_TOKENS + k], row, r->known == 1 ? r->tokens[k] : -1, 8) < 0) return -1;
    for (int k = DENSE_TOKENS; k < NTOKENS; k++)
        if (r->known == 1 && r->tokens[k] >= 0 && put_sparse(&cols[COL_TOKENS + k], row, r->tokens[k]) < 0) return -1;
    return 0;
}

/* ---- the entry point ----------------------------------------------------------------------- */

/* Output buffers and the parse state, kept from call to call: fresh memory for every block cost ~10 %
 * of the scan in page faults. `scan` holds the GIL throughout, so no two calls share them at once. */
static Column cols[NCOLS];
static Buf declined; /* (line_no, start, end) int64 triples */
static Line *line;

static PyObject *scan(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer block;
    long long first_line_no, earliest_us, latest_us;
    const char *fallback = NULL;
    Py_ssize_t fallback_n = 0;
    if (!PyArg_ParseTuple(args, "y*Lz#LL", &block, &first_line_no, &fallback, &fallback_n, &earliest_us, &latest_us))
        return NULL;
    PyObject *result = NULL;
    if (!line) {
        line = calloc(1, sizeof(Line));
        if (!line) {
            PyErr_NoMemory();
            goto done;
        }
        wire(line);
    }
    for (int k = 0; k < NCOLS; k++) cols[k].values.len = cols[k].data.len = cols[k].valid.len = cols[k].rows = 0;
    declined.len = 0;
    Text fallback_key = {fallback_n ? fallback : NULL, fallback_n};
    const char *data = block.buf, *end = data + block.len;
    Py_ssize_t rows = 0;
    int64_t line_no = first_line_no;
    char digits[32];
    for (const char *start = data; start < end; line_no++) {
        const char *nl = memchr(start, '\n', end - start);
        const char *stop = nl ? nl : end;
        Row row;
        Parser ps = {start, stop};
        int accepted = 0;
        if (utf8_ok((const unsigned char *)start, stop - start)) {
            clear(line);
            skip_ws(&ps);
            if (ps.p < ps.end && *ps.p == '{' && parse_object(&ps, &line->env_level, 1)) {
                skip_ws(&ps);
                memset(&row, 0, sizeof row);
                accepted = ps.p == ps.end && rules(line, fallback_key, earliest_us, latest_us, &row, digits);
            }
        }
        int64_t where[3] = {line_no, start - data, stop - data};
        if (accepted ? put_row(cols, rows, &row, line_no) < 0 : buf_put(&declined, where, sizeof where) < 0) {
            PyErr_SetString(PyExc_MemoryError, "out of memory (or a string column beyond 2 GiB) scanning a block");
            goto done;
        }
        rows += accepted;
        start = nl ? nl + 1 : end;
    }
    for (int k = COL_TOKENS + DENSE_TOKENS; k < NCOLS; k++)
        if (pad_nulls(&cols[k], rows) < 0) {
            PyErr_NoMemory();
            goto done;
        }
    PyObject *columns = PyDict_New();
    if (!columns) goto done;
    for (int k = 0; k < NCOLS; k++) {
        PyObject *item = Py_BuildValue("(NNN)", buf_bytes(&cols[k].valid), buf_bytes(&cols[k].values),
                                       buf_bytes(&cols[k].data));
        if (!item || PyDict_SetItemString(columns, COLUMN_NAMES[k], item) < 0) {
            Py_XDECREF(item);
            Py_DECREF(columns);
            goto done;
        }
        Py_DECREF(item);
    }
    result = Py_BuildValue("(nNN)", rows, columns, buf_bytes(&declined));
done:
    PyBuffer_Release(&block);
    return result;
}

static PyMethodDef METHODS[] = {
    {"scan", scan, METH_VARARGS,
     "scan(block, first_line_no, fallback_key, earliest_us, latest_us) -> (rows, columns, declined)"},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef MODULE = {
    .m_base = PyModuleDef_HEAD_INIT, .m_name = "_scan", .m_doc = "The compiled tier of the inbox normaliser.",
    .m_size = -1, .m_methods = METHODS};

PyMODINIT_FUNC PyInit__scan(void) {
    PyObject *m = PyModule_Create(&MODULE);
    if (!m) return NULL;
    if (PyModule_AddIntConstant(m, "MAX_DEPTH", MAX_DEPTH) < 0) return NULL;
    PyObject *shapes = Py_BuildValue("(sssssss)", SHAPES[0], SHAPES[1], SHAPES[2], SHAPES[3], SHAPES[4], SHAPES[5],
                                     SHAPES[6]);
    if (!shapes || PyModule_AddObject(m, "SHAPES", shapes) < 0) return NULL;
    return m;
}
