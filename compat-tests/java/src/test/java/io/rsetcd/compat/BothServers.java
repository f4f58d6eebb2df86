package io.rsetcd.compat;

import java.lang.annotation.ElementType;
import java.lang.annotation.Retention;
import java.lang.annotation.RetentionPolicy;
import java.lang.annotation.Target;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * A test run once per server kind, shown as {@code [etcd]} and {@code [rsetcd]} (the Surefire
 * XML reports name it {@code method(ServerKind) [etcd]}): the method
 * takes a {@link ServerKind} and makes the same assertions on both.
 */
@Target(ElementType.METHOD)
@Retention(RetentionPolicy.RUNTIME)
@ParameterizedTest(name = "[{0}]")
@MethodSource("io.rsetcd.compat.Servers#kinds")
public @interface BothServers {
}
