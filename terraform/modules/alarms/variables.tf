variable "name" {
  type        = string
  description = "Prefix of the alarm and topic names, for example ctr-staging."
}

variable "queue_name" {
  type        = string
  description = "Name of the scoring queue."
}

variable "dead_letter_queue_name" {
  type        = string
  description = "Name of the scoring queue's dead-letter queue."
}

variable "deadline_seconds" {
  type        = number
  description = "Time within which a day's partitions must be scored once they are queued, in seconds."
  default     = 3600
}

variable "oldest_message_alarm_seconds" {
  type        = number
  description = "Age of the oldest message in the scoring queue at which the alarm fires, in seconds. It must leave time to act before deadline_seconds."
  default     = 2700

  validation {
    condition     = var.oldest_message_alarm_seconds >= 300 && var.oldest_message_alarm_seconds < var.deadline_seconds
    error_message = "oldest_message_alarm_seconds must be at least 300 and below deadline_seconds."
  }
}

variable "alarm_email_addresses" {
  type        = list(string)
  description = "Email addresses subscribed to the alarm topic. Each address must confirm its subscription once."
  default     = []
}

variable "tags" {
  type        = map(string)
  description = "Tags added to every resource of the module."
  default     = {}
}
