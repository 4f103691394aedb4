package config

import "strings"

// The name checks of Validate, written out rather than as regular
// expressions: the patterns they replace (kept in names_test.go, which
// checks that both agree) had counted repetitions ({0,62}, {0,127},
// {0,61}) that regexp expands into one instruction per repetition, and
// compiling them at start-up was the most expensive part of this
// package's initialisation (2–3 ms of every `syncer` process).

// isIdent reports whether s is a plain lower-case SQL identifier of at most
// 63 bytes: a letter or _, then letters, digits or _.
func isIdent(s string) bool {
	if len(s) == 0 || len(s) > 63 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !isLower(c) && c != '_' && (i == 0 || !isDigit(c)) {
			return false
		}
	}
	return true
}

// isInstance reports whether s is a metrics instance label: 1 to 128
// letters, digits, '.', '_', ':' or '-', starting with a letter or digit.
func isInstance(s string) bool {
	if len(s) == 0 || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !isAlnum(c) && (i == 0 || !strings.ContainsRune("._:-", rune(c))) {
			return false
		}
	}
	return true
}

// isGUID reports whether s is a GUID in its 8-4-4-4-12 hexadecimal form.
func isGUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !isDigit(c) && !strings.ContainsRune("abcdefABCDEF", rune(c)) {
				return false
			}
		}
	}
	return true
}

// isDomain reports whether s is a DNS domain of two labels or more, in
// any case: each label 1 to 63 letters, digits or '-', neither starting
// nor ending with '-', the last one 2 to 63 letters.
func isDomain(s string) bool {
	labels := strings.Split(s, ".")
	if len(labels) < 2 {
		return false
	}
	for i, l := range labels {
		if len(l) == 0 || len(l) > 63 {
			return false
		}
		if i == len(labels)-1 {
			if len(l) < 2 {
				return false
			}
			for j := 0; j < len(l); j++ {
				if !isLetter(l[j]) {
					return false
				}
			}
			continue
		}
		if l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for j := 0; j < len(l); j++ {
			if !isAlnum(l[j]) && l[j] != '-' {
				return false
			}
		}
	}
	return true
}

func isLower(c byte) bool { return c >= 'a' && c <= 'z' }

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func isLetter(c byte) bool { return isLower(c) || c >= 'A' && c <= 'Z' }

func isAlnum(c byte) bool { return isLetter(c) || isDigit(c) }
