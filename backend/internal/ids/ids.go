// Package ids reads the resource ids of requests. Handlers parse ids with
// it instead of uuid.MustParse, so a malformed id is an InvalidArgument
// error even when no validation ran before the handler.
package ids

import (
	"fmt"

	"connectrpc.com/connect"
	"github.com/google/uuid"
)

// maxQuoted bounds how much of a malformed id an error message repeats.
const maxQuoted = 64

// Parse returns the UUID in value, the request field named field, or an
// InvalidArgument error that names the field.
func Parse(field, value string) (uuid.UUID, error) {
	id, err := uuid.Parse(value)
	if err == nil {
		return id, nil
	}
	if value == "" {
		return uuid.Nil, connect.NewError(connect.CodeInvalidArgument,
			fmt.Errorf("%s is empty; set it to the resource's id, a UUID such as 123e4567-e89b-12d3-a456-426614174000", field))
	}
	if len(value) > maxQuoted {
		value = value[:maxQuoted] + "..."
	}
	return uuid.Nil, connect.NewError(connect.CodeInvalidArgument,
		fmt.Errorf("%s: %q is not a UUID; set it to the resource's id, such as 123e4567-e89b-12d3-a456-426614174000", field, value))
}
