package org.mobdistill

/**
 * The small JSON subset the live protocol's headers and the engine's records use, readable on
 * Android and on a desktop JVM alike (org.json is Android-only; the library has no JSON
 * dependency). Objects become `Map<String, Any?>`, arrays `List<Any?>`, integers `Long`, other
 * numbers `Double`. Input is bounded by the caller (headers are at most 64 KiB); nesting is
 * bounded here so hostile input cannot exhaust the stack.
 */
internal object AmsJson {
    private const val MAX_DEPTH = 32

    /** Parses [text]; throws [IllegalArgumentException] saying where it is not JSON. */
    fun parse(text: String): Any? {
        val reader = Reader(text)
        val value = reader.value(0)
        reader.skipSpace()
        require(reader.pos == text.length) { "JSON: trailing data at offset ${reader.pos}" }
        return value
    }

    fun write(value: Any?): String = StringBuilder().also { append(it, value) }.toString()

    private fun append(out: StringBuilder, value: Any?) {
        when (value) {
            null -> out.append("null")
            is Boolean, is Int, is Long -> out.append(value)
            is Float, is Double -> {
                val number = (value as Number).toDouble()
                require(number.isFinite()) { "JSON has no $number" }
                out.append(number)
            }
            is String -> appendString(out, value)
            is Map<*, *> -> {
                out.append('{')
                value.entries.forEachIndexed { i, (k, v) ->
                    if (i > 0) out.append(',')
                    appendString(out, k as String)
                    out.append(':')
                    append(out, v)
                }
                out.append('}')
            }
            is List<*> -> {
                out.append('[')
                value.forEachIndexed { i, v ->
                    if (i > 0) out.append(',')
                    append(out, v)
                }
                out.append(']')
            }
            else -> throw IllegalArgumentException("no JSON for a ${value::class.simpleName}")
        }
    }

    private fun appendString(out: StringBuilder, text: String) {
        out.append('"')
        for (c in text) {
            when {
                c == '"' -> out.append("\\\"")
                c == '\\' -> out.append("\\\\")
                c < ' ' -> out.append(String.format("\\u%04x", c.code))
                else -> out.append(c)
            }
        }
        out.append('"')
    }

    private class Reader(val text: String) {
        var pos = 0

        fun skipSpace() {
            while (pos < text.length && text[pos] in " \t\r\n") pos++
        }

        private fun fail(what: String): Nothing =
            throw IllegalArgumentException("JSON: $what at offset $pos")

        private fun expect(word: String) {
            if (!text.startsWith(word, pos)) fail("expected '$word'")
            pos += word.length
        }

        fun value(depth: Int): Any? {
            if (depth > MAX_DEPTH) fail("nested deeper than $MAX_DEPTH")
            skipSpace()
            if (pos >= text.length) fail("unexpected end")
            return when (text[pos]) {
                '{' -> objectValue(depth)
                '[' -> arrayValue(depth)
                '"' -> string()
                't' -> true.also { expect("true") }
                'f' -> false.also { expect("false") }
                'n' -> null.also { expect("null") }
                else -> number()
            }
        }

        private fun objectValue(depth: Int): Map<String, Any?> {
            val out = LinkedHashMap<String, Any?>()
            pos++
            skipSpace()
            if (pos < text.length && text[pos] == '}') return out.also { pos++ }
            while (true) {
                skipSpace()
                if (pos >= text.length || text[pos] != '"') fail("expected a key")
                val key = string()
                skipSpace()
                expect(":")
                out[key] = value(depth + 1)
                skipSpace()
                if (pos < text.length && text[pos] == ',') { pos++; continue }
                expect("}")
                return out
            }
        }

        private fun arrayValue(depth: Int): List<Any?> {
            val out = ArrayList<Any?>()
            pos++
            skipSpace()
            if (pos < text.length && text[pos] == ']') return out.also { pos++ }
            while (true) {
                out.add(value(depth + 1))
                skipSpace()
                if (pos < text.length && text[pos] == ',') { pos++; continue }
                expect("]")
                return out
            }
        }

        private fun string(): String {
            pos++
            val out = StringBuilder()
            while (true) {
                if (pos >= text.length) fail("unterminated string")
                val c = text[pos++]
                when {
                    c == '"' -> return out.toString()
                    c < ' ' -> fail("control character in a string")
                    c != '\\' -> out.append(c)
                    pos >= text.length -> fail("unterminated escape")
                    else -> when (val e = text[pos++]) {
                        '"', '\\', '/' -> out.append(e)
                        'b' -> out.append('\b')
                        'f' -> out.append('\u000c')
                        'n' -> out.append('\n')
                        'r' -> out.append('\r')
                        't' -> out.append('\t')
                        'u' -> {
                            if (pos + 4 > text.length) fail("short \\u escape")
                            out.append(text.substring(pos, pos + 4).toIntOrNull(16)?.toChar()
                                           ?: fail("bad \\u escape"))
                            pos += 4
                        }
                        else -> fail("bad escape '\\$e'")
                    }
                }
            }
        }

        private fun number(): Number {
            val start = pos
            if (pos < text.length && text[pos] == '-') pos++
            while (pos < text.length && (text[pos].isDigit() || text[pos] in ".eE+-")) pos++
            val token = text.substring(start, pos)
            if (token.isEmpty() || token == "-") fail("unexpected character")
            val integral = token.none { it in ".eE" }
            return (if (integral) token.toLongOrNull() else null)
                ?: token.toDoubleOrNull()?.takeIf { it.isFinite() && !token.endsWith('.') }
                ?: fail("bad number '$token'")
        }
    }
}
